"""Session > turn > consensus round, sampled in and sampled out, against three nested raw SDK
spans (sampled in) carrying the same attributes, the round's tally and the session's outcome
included."""

from __future__ import annotations

from benchmarks import _fixtures as fx
from benchmarks._harness import FunctionCase, Row, Settings, compare, ratio_row

NESTED = "session > turn > round / 3 nested raw SDK spans"
SAMPLED_OUT = "same, sampled out / raw SDK sampled in"


def run(settings: Settings) -> list[Row]:
    raw_spans = fx.nested_attributes()
    traced = fx.build_pipeline(extra_sinks=[fx.DiscardSink()])
    sampled_out = fx.build_pipeline(extra_sinks=[fx.DiscardSink()], sample_rate=0.0)
    raw = fx.raw_provider()
    cases = [
        FunctionCase(
            "raw", fx.raw_nested(raw.get_tracer("bench"), raw_spans), after=raw.force_flush
        ),
        FunctionCase(
            "agent_trace",
            fx.agent_trace_nested,
            before=lambda: fx.install(traced),
            after=lambda: fx.drain(traced),
        ),
        FunctionCase(
            "sampled_out",
            fx.agent_trace_nested,
            before=lambda: fx.install(sampled_out),
            after=lambda: fx.drain(sampled_out),
        ),
    ]
    # Three spans an operation; a sample must fit in the 2,048-span queue.
    comparison = compare(cases, settings, max_n=600)
    drops = fx.dropped(traced)
    exported = traced.workers[0].exported
    return [
        ratio_row(
            NESTED,
            comparison,
            "agent_trace",
            "raw",
            goal="<= 1.10",
            detail=f"{drops} spans dropped",
        ),
        ratio_row(
            SAMPLED_OUT,
            comparison,
            "sampled_out",
            "raw",
            goal="<= 0.40",
            detail=f"{sampled_out.workers[0].exported} spans exported (expected 0); "
            f"sampled-in pipeline exported {exported}",
        ),
    ]

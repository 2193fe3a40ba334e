"""One agent turn span with 5 attributes against a raw SDK span with the same attributes.

Both sides end their spans into a batch queue drained by an export thread that discards
them: agent-trace through its pipeline (scrubbing, one queue per sink) with one discarding
sink, the raw SDK through `BatchSpanProcessor` with a discarding exporter.
"""

from __future__ import annotations

from benchmarks import _fixtures as fx
from benchmarks._harness import FunctionCase, Row, Settings, compare, ratio_row

FIGURE = "turn span (5 attributes) / raw SDK span"


def run(settings: Settings) -> list[Row]:
    pipeline = fx.build_pipeline(extra_sinks=[fx.DiscardSink()])
    fx.install(pipeline)
    raw = fx.raw_provider()
    cases = [
        FunctionCase("raw", fx.raw_turns(raw.get_tracer("bench")), after=raw.force_flush),
        FunctionCase("agent_trace", fx.agent_trace_turns, after=lambda: fx.drain(pipeline)),
    ]
    # A sample must fit in the queue: spans dropped for a full queue would look cheap.
    comparison = compare(cases, settings, max_n=1500)
    drops = fx.dropped(pipeline)
    return [
        ratio_row(
            FIGURE,
            comparison,
            "agent_trace",
            "raw",
            goal="<= 1.10",
            detail=f"{drops} spans dropped",
        )
    ]

"""A turn span while a sink is down, against the same span while the sink is up.

Down twice over: a sink that never returns from `export` (its queue is full for the whole
run, so every span is dropped and counted), and the real OTLP/HTTP sink aimed at a port
nothing listens on (refused connections, the exporter backing off, its queue full).
"""

from __future__ import annotations

from benchmarks import _fixtures as fx
from benchmarks._harness import FunctionCase, Row, Settings, compare, ratio_row

FULL = "turn while the sink is down (queue full) / sink up"
REFUSED = "turn while OTLP gets refused (closed port) / sink up"

_QUEUE = 2048


def run(settings: Settings) -> list[Row]:
    up = fx.build_pipeline(extra_sinks=[fx.DiscardSink()], max_queue_size=_QUEUE)
    hung = fx.build_pipeline(extra_sinks=[fx.HungSink()], max_queue_size=_QUEUE)
    refused = fx.build_pipeline(
        otlp_endpoint=f"http://127.0.0.1:{fx.closed_port()}/v1/traces",
        otlp_protocol="http",
        max_queue_size=_QUEUE,
    )

    def fill(pipeline: object) -> None:
        # The down sinks' queues are topped up outside the measurement, so that every
        # measured span meets a full queue.
        fx.install(pipeline)  # type: ignore[arg-type]
        worker = pipeline.workers[0]  # type: ignore[attr-defined]
        while worker.queued < _QUEUE:
            fx.agent_trace_turns(_QUEUE - worker.queued)

    cases = [
        FunctionCase(
            "up", fx.agent_trace_turns, before=lambda: fx.install(up), after=lambda: fx.drain(up)
        ),
        FunctionCase("full", fx.agent_trace_turns, before=lambda: fill(hung)),
        FunctionCase("refused", fx.agent_trace_turns, before=lambda: fill(refused)),
    ]
    comparison = compare(cases, settings, max_n=1500)
    drops = fx.dropped_by_reason()
    # Nothing current at exit: the exit flush would wait its 5 s on the hung sink.
    fx.install(None)
    return [
        ratio_row(FULL, comparison, "full", "up", goal="<= 1.05", detail=f"drops {drops}"),
        ratio_row(REFUSED, comparison, "refused", "up", goal="<= 1.05"),
    ]

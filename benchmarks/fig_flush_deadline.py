"""`force_flush` and `shutdown` against a receiver that accepts connections and never answers.

Each sink in turn (OTLP/gRPC, OTLP/HTTP, Sentry envelopes, Sentry OTLP) is aimed at the
receivers process's hung port; a few reviews are traced, then `force_flush(timeout_s=T)` and
`shutdown(timeout_s=T)` are timed. The goal is that neither outlives its timeout by more than
0.5 s. The export timeout stays at its default (10 s), longer than T, so the sink really is
still waiting when the deadline comes.
"""

from __future__ import annotations

import time
from typing import Any

import agent_trace
from benchmarks import _fixtures as fx
from benchmarks._harness import Row, Settings, judge


def _sinks(rx: fx.Receivers) -> dict[str, dict[str, Any]]:
    hung = f"127.0.0.1:{rx.hang_port}"
    return {
        "OTLP/gRPC": {"otlp_endpoint": f"http://{hung}"},
        "OTLP/HTTP": {"otlp_endpoint": f"http://{hung}/v1/traces", "otlp_protocol": "http"},
        "Sentry envelopes": {"sentry_dsn": f"http://public@{hung}/0"},
        "Sentry OTLP": {"sentry_dsn": f"http://public@{hung}/0", "sentry_mode": "otlp"},
    }


def run(settings: Settings) -> list[Row]:
    timeout_s = 0.5 if settings.quick else 2.0
    repeats = 1 if settings.quick else 3
    goal = f"<= {timeout_s + 0.5:.2f} s"
    rows = []
    with fx.receivers() as rx:
        for label, sink in _sinks(rx).items():
            worst = {"force_flush": 0.0, "shutdown": 0.0}
            results = []
            for _ in range(repeats):
                agent_trace.configure(
                    "bench", local_file=False, exit_timeout_s=0.0, _env={}, **sink
                )
                fx.agent_trace_review(20)
                started = time.monotonic()
                flushed = agent_trace.force_flush(timeout_s=timeout_s)
                worst["force_flush"] = max(worst["force_flush"], time.monotonic() - started)
                started = time.monotonic()
                closed = agent_trace.shutdown(timeout_s=timeout_s)
                worst["shutdown"] = max(worst["shutdown"], time.monotonic() - started)
                results.append((flushed, closed))
            returned = {
                "force_flush": sorted({flushed for flushed, _ in results}),
                "shutdown": sorted({closed for _, closed in results}),
            }
            for call, elapsed in worst.items():
                rows.append(
                    Row(
                        figure=f"{call}({timeout_s:g} s), {label} never answers",
                        value=elapsed,
                        unit="s",
                        goal=goal,
                        met=judge(elapsed, goal),
                        detail=f"worst of {repeats}; returned {returned[call]}",
                    )
                )
    return rows

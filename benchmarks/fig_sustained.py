"""Sustained spans per second to both sinks (OTLP/gRPC and Sentry envelopes) with no drops.

Spans are made at a paced rate (reviews of 7 spans) for a few seconds, then flushed; a rate
holds when no span was dropped, the flush delivered everything, and the process kept up with
the pace. The rate doubles until one fails, then the gap is bisected. One process makes and
exports the spans, so both share one GIL; the receivers run in another process on the same
two cores.
"""

from __future__ import annotations

import time

import agent_trace
from benchmarks import _fixtures as fx
from benchmarks._harness import Row, Settings


def _holds(rate: float, duration_s: float) -> tuple[bool, float, str]:
    before = agent_trace.dropped_spans()
    started = time.perf_counter()
    made = fx.paced(fx.agent_trace_review, fx.REVIEW_SPANS, rate, duration_s)
    achieved = made / (time.perf_counter() - started)
    delivered = agent_trace.force_flush(timeout_s=30.0)
    after = agent_trace.dropped_spans()
    lost = {
        f"{sink}/{reason}": count - before.get((sink, reason), 0)
        for (sink, reason), count in after.items()
        if count > before.get((sink, reason), 0)
    }
    if lost:
        why = "dropped " + ", ".join(f"{count} {key}" for key, count in lost.items())
    elif not delivered:
        why = "flush timed out"
    elif achieved < 0.95 * rate:
        why = f"fell behind ({achieved:.0f}/s)"
    else:
        why = "ok"
    return why == "ok", achieved, why


def run(settings: Settings) -> list[Row]:
    duration_s = 1.0 if settings.quick else 5.0
    steps = 2 if settings.quick else 9
    log = []
    with fx.receivers() as rx:
        agent_trace.configure(
            "bench",
            otlp_endpoint=rx.grpc_endpoint,
            sentry_dsn=rx.dsn,
            local_file=False,
            _env={},
        )
        good, bad = 0.0, None
        rate = 1000.0
        best_achieved = 0.0
        for _ in range(steps):
            ok, achieved, why = _holds(rate, duration_s)
            log.append(f"{rate:.0f}: {why}")
            if ok:
                good, best_achieved = rate, max(best_achieved, achieved)
            else:
                bad = rate
            rate = rate * 2 if bad is None else (good + bad) / 2
        counts = rx.stats()
        agent_trace.shutdown(timeout_s=5.0)
    return [
        Row(
            figure="sustained spans/s to OTLP + Sentry with no drops",
            value=best_achieved,
            unit="spans/s",
            detail=f"{duration_s:g} s per rate: {'; '.join(log)}; received {counts}",
        )
    ]

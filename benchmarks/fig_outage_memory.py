"""Resident memory while both sinks are down, at 2,000 spans a second.

OTLP/gRPC and Sentry envelopes go to the receivers process; after a warm-up with both up,
the receivers process is stopped (connections refused from then on) and spans keep coming
at the same rate for the outage (60 s; 4 s in the quick run). RSS, this process's and its
export process's together, is sampled four times a second. The queues are bounded (2,048
spans per sink and in the pipe to the export process, 20,000 spans parked for Sentry), so
memory must stop growing once they are full: the figure is the growth
over the memory before the outage, and the goal is that the second half of the outage adds
next to nothing.
"""

from __future__ import annotations

import statistics
import threading
import time

import agent_trace
from benchmarks import _fixtures as fx
from benchmarks._harness import Row, Settings

RATE = 2000.0
# How the export process is started (not the receivers process, also a child of this one).
_EXPORT_PROCESS = "agent_trace.pipeline.offload.child"
_MB = 1024 * 1024


class RssSampler:
    """Samples the resident set size of this process and its children on a thread of its own."""

    def __init__(self, interval_s: float = 0.25) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # The export process holds the queues of the network sinks: it counts too.
            rss = self._process.memory_info().rss
            for child in self._process.children():
                try:
                    if _EXPORT_PROCESS in " ".join(child.cmdline()):
                        rss += child.memory_info().rss
                except Exception:
                    continue  # ended meanwhile
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(self._interval_s)

    def between(self, start: float, end: float) -> list[int]:
        return [rss for at, rss in self.samples if start <= at <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run(settings: Settings) -> list[Row]:
    warmup_s, outage_s = (2.0, 4.0) if settings.quick else (10.0, 60.0)
    rx = fx.Receivers()
    try:
        agent_trace.configure(
            "bench",
            otlp_endpoint=rx.grpc_endpoint,
            sentry_dsn=rx.dsn,
            local_file=False,
            exit_timeout_s=0.0,
            _env={},
        )
        sampler = RssSampler()
        warm_start = time.monotonic()
        made_up = fx.paced(fx.agent_trace_review, fx.REVIEW_SPANS, RATE, warmup_s)
        agent_trace.force_flush(timeout_s=5.0)
        drops_up = sum(agent_trace.dropped_spans().values())
    finally:
        rx.stop()
    outage_start = time.monotonic()
    made_down = fx.paced(fx.agent_trace_review, fx.REVIEW_SPANS, RATE, outage_s)
    outage_end = time.monotonic()
    sampler.stop()

    # "Before": the second half of the warm-up, when the interpreter's own caches are warm.
    before = statistics.median(sampler.between((warm_start + outage_start) / 2, outage_start))
    during = sampler.between(outage_start, outage_end)
    middle = outage_start + (outage_end - outage_start) / 2
    first_half_peak = max(sampler.between(outage_start, middle))
    peak = max(during)
    late_growth_mb = (peak - first_half_peak) / _MB
    drops = fx.dropped_by_reason()
    achieved = made_down / (outage_end - outage_start)
    return [
        Row(
            figure=f"RSS growth during a {outage_s:g} s outage at 2,000 spans/s",
            value=(peak - before) / _MB,
            unit="MB",
            goal="flat 2nd half",
            met=late_growth_mb <= 2.0,
            detail=f"before {before / _MB:.1f} MB, peak {peak / _MB:.1f} MB, end "
            f"{during[-1] / _MB:.1f} MB; 2nd half added {late_growth_mb:.1f} MB; "
            f"{made_up} spans up ({drops_up} dropped), {made_down} down at "
            f"{achieved:.0f}/s; drops {drops}",
        )
    ]

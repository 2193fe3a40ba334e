"""Export CPU per span with the OTLP and Sentry sinks both on, against the OTLP sink alone.

Both pipelines send to real receivers in another process (OTLP/gRPC, and Sentry envelopes
over HTTP through sentry-sdk's transport). A sample makes small reviews (7 spans each) and
then waits until every span was delivered; its cost is the CPU time of every thread but the
one making spans (export threads, gRPC's own threads), so it is the cost of exporting, not
of tracing. The detail column splits it by thread.

The sinks run on threads of this process (`export_process=False`) so that their work is
measured here; in the export process they do the same work. A fourth case runs both sinks in
the export process, as `configure()` does by default, and measures what exporting still costs
the application's process: turning spans into frames and writing them to the pipe.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from agent_trace._runtime import Pipeline
from benchmarks import _fixtures as fx
from benchmarks._harness import Case, Row, Settings, compare, ratio_row

FIGURE = "export CPU per span, OTLP + Sentry / OTLP alone"
OTLP_MODE = "same, Sentry sink in OTLP mode / OTLP alone"
OFFLOADED = "same, both in the export process: CPU left here / OTLP alone"


def _thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each live Python thread but this one, by thread name."""
    out: dict[str, float] = defaultdict(float)
    me = threading.get_ident()
    for thread in threading.enumerate():
        if thread.ident is None or thread.ident == me:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            out[thread.name] += time.clock_gettime(clock)
        except (OSError, ProcessLookupError):
            continue  # ended meanwhile
    return dict(out)


class ExportCase(Case):
    def __init__(self, name: str, pipeline: Pipeline) -> None:
        self.name = name
        self.pipeline = pipeline
        self.by_thread: dict[str, float] = defaultdict(float)
        self.spans = 0
        # CPU of the export process, where the pipeline has one (not part of the cost).
        self.elsewhere = 0.0

    def before(self) -> None:
        fx.install(self.pipeline)

    def _export_process_cpu(self) -> float:
        for worker in self.pipeline.workers:
            pid = getattr(worker.sink, "pid", 0)
            if pid:
                import psutil

                times = psutil.Process(pid).cpu_times()
                return float(times.user + times.system)
        return 0.0

    def sample(self, n: int) -> float:
        elsewhere_start = self._export_process_cpu()
        threads_start = _thread_cpu()
        process_start, main_start = time.process_time(), time.thread_time()
        fx.agent_trace_review(n)
        if not fx.drain(self.pipeline):
            raise RuntimeError(f"{self.name}: spans were not delivered within the flush timeout")
        cost = (time.process_time() - process_start) - (time.thread_time() - main_start)
        threads_end = _thread_cpu()
        named = 0.0
        for thread, used in threads_end.items():
            spent = used - threads_start.get(thread, 0.0)
            # Flush helpers live for one call; they are counted under "other".
            if thread.startswith(("agent-trace-flush", "agent-trace-deadline")):
                continue
            self.by_thread[thread] += spent
            named += spent
        self.by_thread["other (gRPC core, flush helpers)"] += cost - named
        self.elsewhere += self._export_process_cpu() - elsewhere_start
        self.spans += n * fx.REVIEW_SPANS
        return cost

    def split(self) -> str:
        parts = sorted(self.by_thread.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {used / self.spans * 1e6:.1f}" for name, used in parts[:5])


def run(settings: Settings) -> list[Row]:
    with fx.receivers() as rx:
        here = {"export_process": False}
        otlp = fx.build_pipeline(otlp_endpoint=rx.grpc_endpoint, **here)
        both = fx.build_pipeline(otlp_endpoint=rx.grpc_endpoint, sentry_dsn=rx.dsn, **here)
        # Sentry's OTLP endpoint is the HTTP server's /api/0/integration/otlp/...: the
        # receiver answers any OTLP path under /api with 200 as well.
        both_otlp = fx.build_pipeline(
            otlp_endpoint=rx.grpc_endpoint, sentry_dsn=rx.dsn, sentry_mode="otlp", **here
        )
        offloaded = fx.build_pipeline(
            otlp_endpoint=rx.grpc_endpoint, sentry_dsn=rx.dsn, export_process=True
        )
        cases = [
            ExportCase("otlp", otlp),
            ExportCase("both", both),
            ExportCase("both_otlp", both_otlp),
            ExportCase("offloaded", offloaded),
        ]
        # Not calibrated to a short sample: a sample of a few reviews would send one small
        # batch per flush and measure the fixed cost of a request. 250 reviews are 1,750
        # spans, several full batches, and still fit in the queues (2,048 spans, sentry-sdk's
        # 512 envelopes): a dropped span costs no export.
        reviews = 100 if settings.quick else 250
        comparison = compare(cases, settings, sizes={c.name: reviews for c in cases})
        counts = rx.stats()
        drops = fx.dropped_by_reason()
    per_span = {c.name: comparison.median_cost(c.name) / fx.REVIEW_SPANS * 1e6 for c in cases}
    split = {c.name: c.split() for c in cases}
    offloaded_case = cases[-1]
    elsewhere = offloaded_case.elsewhere / max(1, offloaded_case.spans) * 1e6
    return [
        ratio_row(
            FIGURE,
            comparison,
            "both",
            "otlp",
            goal="<= 1.50",
            detail=f"{per_span['both']:.1f} vs {per_span['otlp']:.1f} us CPU per span; us per "
            f"span by thread: [{split['both']}] vs [{split['otlp']}]; received {counts}; "
            f"drops {drops}",
        ),
        ratio_row(
            OTLP_MODE,
            comparison,
            "both_otlp",
            "otlp",
            goal=None,
            detail=f"{per_span['both_otlp']:.1f} us CPU per span; by thread: "
            f"[{split['both_otlp']}]",
        ),
        ratio_row(
            OFFLOADED,
            comparison,
            "offloaded",
            "otlp",
            goal=None,
            detail=f"{per_span['offloaded']:.1f} us CPU per span in this process, "
            f"{elsewhere:.1f} in the export process; by thread: [{split['offloaded']}]",
        ),
    ]

"""The FastAPI service of the throughput figures, served by uvicorn in a process of its own.

`BENCH_APP=agent_trace` traces it with agent-trace (OTLP and Sentry sinks from the
environment the figure sets); `BENCH_APP=otel` with OpenTelemetry's FastAPI instrumentation
alone, its spans going to a batch processor with a discarding exporter.
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI

WORK_S = 0.0005

app = FastAPI()


@app.get("/work")
async def work() -> dict[str, bool]:
    # Half a millisecond of CPU, on the event loop as a handler doing real work would be.
    deadline = time.perf_counter() + WORK_S
    while time.perf_counter() < deadline:
        pass
    return {"ok": True}


def _traced(variant: str) -> None:
    if variant == "agent_trace":
        import agent_trace
        from agent_trace.integrations.fastapi import instrument

        agent_trace.configure()  # service name, OTLP endpoint and DSN from the environment
        instrument(app)
    elif variant == "otel":
        from opentelemetry import trace
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from benchmarks._fixtures import DiscardExporter

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(DiscardExporter()))
        trace.set_tracer_provider(provider)
        FastAPIInstrumentor.instrument_app(app)
    else:
        raise SystemExit(f"BENCH_APP={variant!r}: use agent_trace or otel")


_traced(os.environ.get("BENCH_APP", ""))

"""An agent service in a host program with OpenTelemetry providers of its own; run by
test_host_providers.py.

The host installs a global tracer provider before agent-trace is configured (from the
variables the test passes), the app is instrumented before `configure()` too, and the host
installs its own global meter provider last, as a program with telemetry of its own would.
`/host-telemetry` answers the names of the spans and metrics the host's providers have seen.
"""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agent_trace
from agent_trace.integrations.fastapi import instrument

host_spans = InMemorySpanExporter()
host_tracer_provider = TracerProvider()
host_tracer_provider.add_span_processor(SimpleSpanProcessor(host_spans))
trace.set_tracer_provider(host_tracer_provider)

app = instrument(FastAPI())
agent_trace.configure()

host_reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[host_reader]))


@app.get("/work")
async def work() -> dict[str, str]:
    with agent_trace.session("review") as session:
        return {"session_span_id": f"{session.span_id}"}


@app.get("/host-telemetry")
async def host_telemetry() -> dict[str, list[str]]:
    data = host_reader.get_metrics_data()
    metric_names = (
        set()
        if data is None
        else {
            metric.name
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }
    )
    return {
        "spans": sorted({span.name for span in host_spans.get_finished_spans()}),
        "metrics": sorted(metric_names),
    }

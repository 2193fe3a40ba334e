"""An agent service whose host program has a meter provider of its own; run by test_metrics.py.

The app is instrumented before agent-trace is configured (from `AGENT_TRACE_PROMETHEUS_PORT`
and the other variables the test passes), and the host installs its own global meter provider
last, as a program that adds OpenTelemetry metrics of its own would. `/host-metrics` answers
the names of the metrics that provider has seen.
"""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import agent_trace
from agent_trace.integrations.fastapi import instrument

app = instrument(FastAPI())
agent_trace.configure()

host_reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[host_reader]))


@app.get("/work")
async def work() -> dict[str, bool]:
    return {"ok": True}


@app.get("/host-metrics")
async def host_metrics() -> list[str]:
    data = host_reader.get_metrics_data()
    if data is None:
        return []
    return sorted(
        {
            metric.name
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }
    )

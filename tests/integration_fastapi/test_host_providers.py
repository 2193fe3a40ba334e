"""An instrumented app in a host program with OpenTelemetry providers of its own.

OpenTelemetry's FastAPI instrumentation takes the global tracer and meter providers unless
given others. Those are the host program's: the host may have installed a tracer provider
before agent-trace, and may install a meter provider at any time. agent-trace hands the
instrumentation its own, so each request's server span and HTTP metrics reach agent-trace's
sinks and readers (the local file and Prometheus here), and none reaches the host's providers.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import agent_trace
from tests.backends._support import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    http_request,
    poll,
    scrubbed_env,
    start_uvicorn,
)
from tests.integration_fastapi.conftest import ROOT, RUN
from tests.reliability._support import FileSpan, file_spans

pytestmark = pytest.mark.integration


@dataclass
class HostService:
    port: int
    prometheus_port: int
    trace_path: Path
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def get(self, path: str) -> Any:
        response = http_request("GET", self.url + path, timeout_s=10.0)
        assert response.status == 200, response.body
        return json.loads(response.body)

    def scrape(self) -> str:
        url = f"http://{LOOPBACK}:{self.prometheus_port}/metrics"
        return http_request("GET", url, timeout_s=10.0).body.decode()


@pytest.fixture(scope="module")
def host_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostService]:
    port, prometheus_port = free_port(), free_port()
    trace_path = tmp_path_factory.mktemp("host") / "traces.jsonl"
    name = f"fastapi-host-{RUN}"
    env = scrubbed_env(
        {
            "OTEL_SERVICE_NAME": name,
            "AGENT_TRACE_PROMETHEUS_PORT": str(prometheus_port),
            "AGENT_TRACE_LOCAL_PATH": str(trace_path),
            "AGENT_TRACE_SCHEDULE_DELAY_S": "0.1",
        }
    )
    process = start_uvicorn(
        name, "tests.integration_fastapi.host_service:app", port, env=env, cwd=ROOT
    )
    service = HostService(port, prometheus_port, trace_path, process)
    try:
        yield service
    finally:
        process.stop()


def work_requests_counted(text: str) -> float | None:
    """The request count Prometheus shows for GET /work, from the duration histogram."""
    for line in text.splitlines():
        if re.match(r"http_server_(request_)?duration_\w+_count\{", line) and '"/work"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_server_metrics_reach_agent_traces_readers_not_the_hosts_provider(
    host_service: HostService,
) -> None:
    for _ in range(3):
        host_service.get("/work")

    # The instrumentation records a request's duration just after its response is sent.
    with contextlib.suppress(TimeoutError):
        poll(lambda: work_requests_counted(host_service.scrape()) == 3 or None, timeout_s=10.0)
    assert work_requests_counted(host_service.scrape()) == 3, host_service.scrape()
    host_metrics = host_service.get("/host-telemetry")["metrics"]
    assert not [m for m in host_metrics if m.startswith("http.server")], host_metrics


def test_server_spans_reach_agent_traces_sinks_not_the_hosts_provider(
    host_service: HostService,
) -> None:
    answer = host_service.get("/work")

    def request_spans() -> tuple[FileSpan, FileSpan] | None:
        spans = {s.span_id: s for s in file_spans(host_service.trace_path)}
        session = spans.get(answer["session_span_id"])
        server = spans.get(session.parent_id or "") if session is not None else None
        return (session, server) if session is not None and server is not None else None

    # The session span is in the file once the service's export thread has written it; its
    # parent, the request's server span, must be there as well.
    with contextlib.suppress(TimeoutError):
        poll(request_spans, timeout_s=10.0)
    found = request_spans()
    names = sorted(s.name for s in file_spans(host_service.trace_path))
    assert found is not None, names
    assert found[1].name == "GET /work"
    host_spans = host_service.get("/host-telemetry")["spans"]
    assert host_spans == [], host_spans
    assert agent_trace.settings() is None  # this test process itself traces nothing

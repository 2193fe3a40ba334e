"""The HTTP server metrics of an instrumented app go to agent-trace's metric readers.

OpenTelemetry's FastAPI instrumentation measures request durations and active requests on the
global meter provider unless given one. agent-trace never installs global providers (they are
the host program's), so it hands the instrumentation its own: the measurements reach the
readers agent-trace was configured with (Prometheus here), and never a provider the host
installs for its own metrics.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.backends._support import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    http_request,
    poll,
    scrubbed_env,
)
from tests.integration_fastapi.conftest import ROOT, RUN

pytestmark = pytest.mark.integration


@dataclass
class MetricsService:
    port: int
    prometheus_port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def get(self, path: str) -> bytes:
        response = http_request("GET", self.url + path, timeout_s=10.0)
        assert response.status == 200, response.body
        return response.body

    def scrape(self) -> str:
        url = f"http://{LOOPBACK}:{self.prometheus_port}/metrics"
        return http_request("GET", url, timeout_s=10.0).body.decode()


@pytest.fixture(scope="module")
def metrics_service() -> Iterator[MetricsService]:
    port, prometheus_port = free_port(), free_port()
    name = f"fastapi-metrics-{RUN}"
    env = scrubbed_env(
        {
            "OTEL_SERVICE_NAME": name,
            "AGENT_TRACE_PROMETHEUS_PORT": str(prometheus_port),
            "AGENT_TRACE_LOCAL_FILE": "false",
        }
    )
    process = ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.integration_fastapi.metrics_service:app",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
    )
    process.start()
    service = MetricsService(port, prometheus_port, process)

    def healthy() -> bool | None:
        process.check_alive()
        try:
            return True if http_request("GET", f"{service.url}/health").status == 200 else None
        except OSError:
            return None

    try:
        poll(healthy, timeout_s=30.0, interval_s=0.1, describe=process.log_tail)
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
    metrics_service: MetricsService,
) -> None:
    for _ in range(3):
        metrics_service.get("/work")

    host_seen = metrics_service.get("/host-metrics").decode()
    assert "http.server" not in host_seen, host_seen

    # The instrumentation records a request's duration just after its response is sent.
    with contextlib.suppress(TimeoutError):
        poll(
            lambda: work_requests_counted(metrics_service.scrape()) == 3 or None,
            timeout_s=10.0,
        )
    assert work_requests_counted(metrics_service.scrape()) == 3, metrics_service.scrape()

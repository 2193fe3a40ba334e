"""Real uvicorn processes running tests/integration_fastapi/service.py, sending to the session's
Jaeger and Spotlight (the fixtures of tests/conftest.py), stopped by PID."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import agent_trace
from tests.backends._support import (
    LOOPBACK,
    BackendError,
    HttpResponse,
    ManagedProcess,
    free_port,
    http_request,
    scrubbed_env,
    start_uvicorn,
)
from tests.backends.jaeger import Jaeger
from tests.backends.spotlight import Spotlight

ROOT = Path(__file__).resolve().parents[2]
HASH = "c0ffee00d15ea5e5"
RUN = uuid.uuid4().hex[:6]


@dataclass
class Service:
    """One instrumented agent service in a uvicorn process of its own."""

    name: str
    mode: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> HttpResponse:
        """A request with the right constitutional hash unless `headers` say otherwise."""
        sent = {"Constitutional-Hash": HASH, **(headers or {})}
        return http_request(method, self.url + path, headers=sent, body=body, timeout_s=10.0)


def start_service(mode: str, jaeger: Jaeger, spotlight: Spotlight) -> Service:
    name = f"fastapi-{mode}-{RUN}"
    port = free_port()
    env = scrubbed_env(
        {
            "OTEL_SERVICE_NAME": name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_grpc_endpoint,
            "SENTRY_DSN": spotlight.dsn,
            "CONSTITUTIONAL_HASH": HASH,
            "TEST_SERVICE_HASH_MODE": mode,
            "AGENT_TRACE_SCHEDULE_DELAY_S": "0.1",
            "AGENT_TRACE_LOCAL_FILE": "false",
        }
    )
    process = start_uvicorn(
        name,
        "tests.integration_fastapi.service:app",
        port,
        env=env,
        cwd=ROOT,
        # uvicorn refuses a header block over 16 KB before the app sees it (a 400); the
        # tests raise the limit so a 1 MB header reaches the app's own rules.
        extra_args=["--h11-max-incomplete-event-size", str(4 * 1024 * 1024)],
    )
    return Service(name, mode, port, process)


def _started(mode: str, jaeger: Jaeger, spotlight: Spotlight) -> Service:
    try:
        return start_service(mode, jaeger, spotlight)
    except BackendError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def enforce_service(_jaeger_server: Jaeger, _spotlight_server: Spotlight) -> Iterator[Service]:
    service = _started("enforce", _jaeger_server, _spotlight_server)
    yield service
    service.process.stop()


@pytest.fixture(scope="module")
def observe_service(_jaeger_server: Jaeger, _spotlight_server: Spotlight) -> Iterator[Service]:
    service = _started("observe", _jaeger_server, _spotlight_server)
    yield service
    service.process.stop()


@pytest.fixture
def coordinator(jaeger: Jaeger, spotlight: Spotlight) -> Iterator[str]:
    """This test process as a coordinator sending to the same Jaeger and Spotlight."""
    name = f"fastapi-coordinator-{RUN}"
    agent_trace.configure(
        name,
        otlp_endpoint=jaeger.otlp_grpc_endpoint,
        sentry_dsn=spotlight.dsn,
        constitution_hash=HASH,
        local_file=False,
        schedule_delay_s=0.1,
        _env={},
    )
    yield name
    agent_trace.shutdown(timeout_s=5)


def raw_request(port: int, request: bytes, timeout_s: float = 10.0) -> tuple[int | None, bytes]:
    """Send bytes exactly as given (duplicate lines, odd bytes) and read the answer.

    Returns the status (None when the server closed the connection without one) and the body.
    """
    with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
        # A server that refuses the request early may close while it is still being sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    data = b"".join(chunks)
    if not data.startswith(b"HTTP/1.1 "):
        return None, data
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def http_get(path: str, port: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A GET request as raw bytes, one line per header pair, closing the connection."""
    lines = [f"GET {path} HTTP/1.1".encode(), f"Host: {LOOPBACK}:{port}".encode()]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"

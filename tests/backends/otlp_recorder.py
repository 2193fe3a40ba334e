"""OTLP receivers that record exactly what an exporter sent, and can play a failing sink.

`OtlpHttpRecorder` takes OTLP/HTTP (any path, any method) and `OtlpGrpcRecorder` takes the
OTLP gRPC TraceService; both listen on 127.0.0.1 on a port of their own and keep every request
with its headers or metadata, decoded into `ExportTraceServiceRequest` where it is protobuf.
Each answers success until told to fail (an HTTP status / gRPC code), to hang (accept the
request and never answer, like a sink that has stopped responding), or to report a partial
success.

Example:
    with OtlpHttpRecorder() as recorder:
        ...export to recorder.traces_url...
        [request] = recorder.wait_for_requests(1)
        assert request.path == "/v1/traces"
        assert [s.name for s in request.spans] == ["invoke_workflow review"]
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.backends._support import LOOPBACK, poll

ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
ExportTraceServiceResponse = trace_service_pb2.ExportTraceServiceResponse

# Ports handed out by closed_port(), kept bound (without listening) for the life of the test
# process: a connection to them is refused, and no other server can take them meanwhile.
_RESERVED_SOCKETS: list[socket.socket] = []


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: every connection attempt is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    _RESERVED_SOCKETS.append(sock)
    return int(sock.getsockname()[1])


def spans_of(request: ExportTraceServiceRequest) -> list[trace_pb2.Span]:
    """Every span of one export request, in the order they were sent."""
    return [
        span
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


@dataclass(frozen=True)
class _Behaviour:
    """How the recorder answers the next requests."""

    kind: Literal["ok", "fail", "hang", "partial"] = "ok"
    http_status: int = 200
    grpc_code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    retry_after_s: int | None = None
    rejected_spans: int = 0
    # Extra headers on every answer (Sentry's `X-Sentry-Rate-Limits`, say).
    answer_headers: tuple[tuple[str, str], ...] = ()


class _Recorder:
    """What the HTTP and gRPC recorders share: the record, the behaviour, the hang latch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._behaviour = _Behaviour()
        self._release = threading.Event()  # set: hanging requests give up and return
        self._arrived = threading.Condition(self._lock)
        self._records: list[Any] = []

    def succeed(self, headers: dict[str, str] | None = None) -> None:
        """Answer success again (with `headers`); requests hanging so far are let go without
        an answer."""
        self._set(_Behaviour(answer_headers=tuple((headers or {}).items())))

    def hang(self) -> None:
        """Accept and record each request, then never answer it (until succeed() or stop())."""
        self._set(_Behaviour(kind="hang"))

    def partial_success(self, rejected_spans: int, message: str = "rejected by the test") -> None:
        """Answer success carrying OTLP's partial_success with rejected_spans."""
        self._set(_Behaviour(kind="partial", rejected_spans=rejected_spans, message=message))

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def _set(self, behaviour: _Behaviour) -> None:
        with self._lock:
            old_release = self._release
            self._behaviour = behaviour
            self._release = threading.Event()
        old_release.set()

    def _record(self, record: Any) -> tuple[_Behaviour, threading.Event]:
        with self._arrived:
            self._records.append(record)
            self._arrived.notify_all()
            return self._behaviour, self._release

    def _snapshot(self) -> list[Any]:
        with self._lock:
            return list(self._records)

    def _wait(self, count: int, timeout_s: float) -> list[Any]:
        def probe() -> list[Any] | None:
            records = self._snapshot()
            return records if len(records) >= count else None

        def describe() -> str:
            return f"{len(self._snapshot())} of {count} requests arrived"

        return poll(probe, timeout_s=timeout_s, interval_s=0.02, describe=describe)


# --- OTLP/HTTP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedHttpRequest:
    """One request as it reached the recorder."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    received_at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def content(self) -> bytes:
        """The body with its Content-Encoding (gzip, deflate) undone."""
        encoding = (self.header("Content-Encoding") or "").lower()
        if encoding == "gzip":
            return gzip.decompress(self.body)
        if encoding == "deflate":
            return zlib.decompress(self.body)
        return self.body

    @property
    def decoded(self) -> Message | None:
        """The protobuf export request (traces, or metrics/logs by path), None if not protobuf."""
        content_type = (self.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-protobuf":
            return None
        message: Message
        if "/v1/metrics" in self.path:
            message = metrics_service_pb2.ExportMetricsServiceRequest()
        elif "/v1/logs" in self.path:
            message = logs_service_pb2.ExportLogsServiceRequest()
        else:
            message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(self.content)
        except DecodeError:
            return None
        return message

    @property
    def spans(self) -> list[trace_pb2.Span]:
        decoded = self.decoded
        return spans_of(decoded) if isinstance(decoded, ExportTraceServiceRequest) else []


# The google.rpc.Status code an OTLP/HTTP server puts in the body of a failure, per status.
_GRPC_CODE_FOR_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # Plenty for a test: exporters open few connections, a hanging test may hold some.
    request_queue_size = 64

    def __init__(self, recorder: OtlpHttpRecorder) -> None:
        super().__init__((LOOPBACK, 0), _HttpHandler)
        self.recorder = recorder


class _HttpHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive, as a real collector speaks it: exporters reuse their connections.
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: pytest shows the recorded requests when a test fails, not an access log.
        pass

    def _handle(self) -> None:
        body = self._read_body()
        request = RecordedHttpRequest(self.command, self.path, list(self.headers.items()), body)
        behaviour, release = self.server.recorder._record(request)

        if behaviour.kind == "hang":
            release.wait()
            # Never answered: the connection just closes once the test lets go.
            self.close_connection = True
            return

        if behaviour.kind == "fail":
            status = status_pb2.Status(
                code=_GRPC_CODE_FOR_HTTP.get(behaviour.http_status, grpc.StatusCode.INTERNAL).value[
                    0
                ],
                message=behaviour.message or "failing on purpose",
            )
            headers = {"Content-Type": "application/x-protobuf"}
            if behaviour.retry_after_s is not None:
                headers["Retry-After"] = str(behaviour.retry_after_s)
            headers.update(behaviour.answer_headers)
            self._answer(behaviour.http_status, status.SerializeToString(), headers)
            return

        response = ExportTraceServiceResponse()
        if behaviour.kind == "partial":
            response.partial_success.rejected_spans = behaviour.rejected_spans
            response.partial_success.error_message = behaviour.message
        extra = dict(behaviour.answer_headers)
        if (request.header("Content-Type") or "").startswith("application/json"):
            self._answer(200, b"{}", {"Content-Type": "application/json", **extra})
        else:
            payload = response.SerializeToString()
            self._answer(200, payload, {"Content-Type": "application/x-protobuf", **extra})

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class OtlpHttpRecorder(_Recorder):
    """An OTLP/HTTP receiver on 127.0.0.1 that records every request.

    Not started by the constructor: call start(), or use it as a context manager.
    """

    def __init__(self) -> None:
        super().__init__()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OtlpHttpRecorder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> OtlpHttpRecorder:
        self._server = _HttpServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-http-recorder",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops listening and lets any hanging request go (unanswered)."""
        if self._server is None:
            return
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the recorder is not started")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. for OTEL_EXPORTER_OTLP_ENDPOINT (the SDK appends /v1/traces)."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def traces_url(self) -> str:
        return f"{self.endpoint}/v1/traces"

    def fail(
        self,
        status: int = 503,
        message: str = "",
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer every request with this HTTP status (and a google.rpc.Status body)."""
        self._set(
            _Behaviour(
                kind="fail",
                http_status=status,
                message=message,
                retry_after_s=retry_after_s,
                answer_headers=tuple((headers or {}).items()),
            )
        )

    @property
    def requests(self) -> list[RecordedHttpRequest]:
        return self._snapshot()

    def wait_for_requests(
        self, count: int, *, timeout_s: float = 10.0
    ) -> list[RecordedHttpRequest]:
        return self._wait(count, timeout_s)

    def spans(self) -> list[trace_pb2.Span]:
        """Every span of every recorded trace request, in arrival order."""
        return [span for request in self.requests for span in request.spans]


# --- OTLP/gRPC ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedGrpcCall:
    """One TraceService/Export call as it reached the recorder."""

    request: ExportTraceServiceRequest
    metadata: list[tuple[str, str | bytes]]
    peer: str
    received_at: float = field(default_factory=time.time)

    def metadata_value(self, key: str) -> str | bytes | None:
        wanted = key.lower()
        return next((value for k, value in self.metadata if k.lower() == wanted), None)

    @property
    def spans(self) -> list[trace_pb2.Span]:
        return spans_of(self.request)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, recorder: OtlpGrpcRecorder) -> None:
        self._recorder = recorder

    def Export(
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        call = RecordedGrpcCall(
            request,
            [(item.key, item.value) for item in context.invocation_metadata()],
            context.peer(),
        )
        behaviour, release = self._recorder._record(call)

        if behaviour.kind == "hang":
            # Never answered while the client waits; once it has given up (deadline, cancel) the
            # worker thread is freed, so a long hang cannot exhaust the server's pool.
            while not release.wait(0.05):
                if not context.is_active():
                    break
            context.abort(grpc.StatusCode.UNAVAILABLE, "the recorder stopped hanging")

        if behaviour.kind == "fail":
            context.abort(behaviour.grpc_code, behaviour.message or "failing on purpose")

        response = ExportTraceServiceResponse()
        if behaviour.kind == "partial":
            response.partial_success.rejected_spans = behaviour.rejected_spans
            response.partial_success.error_message = behaviour.message
        return response


class OtlpGrpcRecorder(_Recorder):
    """An OTLP gRPC TraceService on 127.0.0.1 that records every call and its metadata."""

    def __init__(self, max_workers: int = 8) -> None:
        super().__init__()
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._port = 0

    def __enter__(self) -> OtlpGrpcRecorder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> OtlpGrpcRecorder:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_workers))
        add_servicer = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
        add_servicer(_TraceService(self), server)  # type: ignore[no-untyped-call]
        self._port = server.add_insecure_port(f"{LOOPBACK}:0")
        server.start()
        self._server = server
        return self

    def stop(self, grace_s: float = 0.5) -> None:
        if self._server is None:
            return
        self._release.set()
        self._server.stop(grace_s).wait()
        self._server = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        """For OTLPSpanExporter(endpoint=..., insecure=True) or OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://{LOOPBACK}:{self._port}"

    def fail(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, message: str = "") -> None:
        """Abort every call with this status code."""
        self._set(_Behaviour(kind="fail", grpc_code=code, message=message))

    @property
    def calls(self) -> list[RecordedGrpcCall]:
        return self._snapshot()

    def wait_for_calls(self, count: int, *, timeout_s: float = 10.0) -> list[RecordedGrpcCall]:
        return self._wait(count, timeout_s)

    def spans(self) -> list[trace_pb2.Span]:
        return [span for call in self.calls for span in call.spans]


def iter_attributes(span: trace_pb2.Span) -> Iterator[tuple[str, Any]]:
    """A span's attributes as (key, Python value) pairs; arrays become lists."""
    for attribute in span.attributes:
        yield attribute.key, _any_value(attribute.value)


def attributes_of(span: trace_pb2.Span) -> dict[str, Any]:
    return dict(iter_attributes(span))


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _any_value(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind) if kind else None

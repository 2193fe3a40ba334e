"""Local receivers for the benchmarks, run as a process of their own on 127.0.0.1.

`python -m benchmarks._receivers` starts an OTLP/gRPC trace receiver, one HTTP server that
takes OTLP/HTTP (`/v1/traces`) and Sentry envelopes (`/api/<project>/envelope/`), and a TCP
server that accepts connections and never answers. It prints their ports as one JSON line and
runs until its standard input closes. Everything received is counted and thrown away;
`GET /stats` answers the counts. The HTTP server also takes OTLP at the path Sentry's DSN
points OTLP to (`/api/<project>/integration/otlp/v1/traces/`).

A process of its own, so that decoding what arrives costs the measured process nothing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from concurrent import futures
from typing import Any

_counts = {"otlp_grpc_spans": 0, "otlp_http_requests": 0, "sentry_envelopes": 0}
_counts_lock = threading.Lock()


def _count(key: str, amount: int = 1) -> None:
    with _counts_lock:
        _counts[key] += amount


class _Http(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining, parsed by hand: `http.server` spent ~60 us of
    CPU a request (a thread and an email parser per request), and this process shares the
    machine's cores with the process being measured: a receiver standing in for a remote
    Sentry should cost as little as one can. Bodies come with a Content-Length (every client
    here sends one); chunked bodies are read too."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answers = []
        while True:
            request = self._take()
            if request is None:
                break
            answers.append(_answer(*request))
        if answers and self._transport is not None:
            self._transport.write(b"".join(answers))

    def _take(self) -> tuple[str, str] | None:
        """One whole request off the buffer (method, path), or None until more arrives."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        method, path = head[0].split(" ")[:2]
        length = 0
        chunked = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        start = end + 4
        if chunked:
            consumed = _chunked_end(buffer, start)
            if consumed is None:
                return None
            del buffer[:consumed]
        else:
            if len(buffer) < start + length:
                return None
            del buffer[: start + length]
        return method, path


def _chunked_end(buffer: bytearray, at: int) -> int | None:
    """Where a chunked body starting at `at` ends, or None if it has not all arrived."""
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2 + size + 2
        if len(buffer) < at:
            return None
        if size == 0:
            return at


def _answer(method: str, path: str) -> bytes:
    if method == "POST" and (path.startswith("/v1/traces") or "/integration/otlp/" in path):
        # OTLP/HTTP at the Collector's path and at Sentry's (`/api/0/integration/otlp/...`).
        _count("otlp_http_requests")
        # An empty ExportTraceServiceResponse is zero bytes of protobuf.
        return _response(200, b"", "application/x-protobuf")
    if method == "POST" and "/envelope" in path:
        _count("sentry_envelopes")
        return _response(200, b"{}", "application/json")
    if method == "GET" and path == "/stats":
        with _counts_lock:
            body = json.dumps(_counts).encode()
        return _response(200, body, "application/json")
    return _response(404, b"", "text/plain")


def _response(status: int, body: bytes, content_type: str) -> bytes:
    reason = {200: "OK", 404: "Not Found"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _start_http() -> int:
    """The HTTP server, on an event loop of its own thread; returns its port."""
    loop = asyncio.new_event_loop()
    ready: list[int] = []
    started = threading.Event()

    async def serve() -> None:
        server = await loop.create_server(_Http, "127.0.0.1", 0)
        ready.append(server.sockets[0].getsockname()[1])
        started.set()
        await server.serve_forever()

    threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True).start()
    started.wait(10)
    return ready[0]


def _start_grpc() -> tuple[Any, int]:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            spans = sum(
                len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
            )
            _count("otlp_grpc_spans", spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        TraceService(), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _start_hanging() -> int:
    """A listener that accepts every connection and never reads nor answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    port: int = listener.getsockname()[1]
    return port


def main() -> None:
    grpc_server, grpc_port = _start_grpc()
    ports = {"grpc": grpc_port, "http": _start_http(), "hang": _start_hanging()}
    print(json.dumps(ports), flush=True)
    # Run until the parent closes our standard input (or dies, which closes it too).
    sys.stdin.read()
    grpc_server.stop(0)


if __name__ == "__main__":
    main()

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

import json
import socket
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_counts = {"otlp_grpc_spans": 0, "otlp_http_requests": 0, "sentry_envelopes": 0}
_counts_lock = threading.Lock()


def _count(key: str, amount: int = 1) -> None:
    with _counts_lock:
        _counts[key] += amount


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as the OTLP and Sentry clients expect of a real receiver. Each answer goes
    # out in one segment (buffered, flushed after the handler) with Nagle off: headers and
    # body written apart wait out the client's delayed ACK, 40 ms a request.
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        # OTLP/HTTP at the Collector's path and at Sentry's (`/api/0/integration/otlp/...`).
        if self.path.startswith("/v1/traces") or "/integration/otlp/" in self.path:
            _count("otlp_http_requests")
            # An empty ExportTraceServiceResponse is zero bytes of protobuf.
            self._answer(200, b"", "application/x-protobuf")
        elif "/envelope" in self.path:
            _count("sentry_envelopes")
            self._answer(200, b"{}", "application/json")
        else:
            self._answer(404, b"", "text/plain")

    def do_GET(self) -> None:
        if self.path == "/stats":
            with _counts_lock:
                body = json.dumps(_counts).encode()
            self._answer(200, body, "application/json")
        else:
            self._answer(404, b"", "text/plain")


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
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    ports = {"grpc": grpc_port, "http": http.server_address[1], "hang": _start_hanging()}
    print(json.dumps(ports), flush=True)
    # Run until the parent closes our standard input (or dies, which closes it too).
    sys.stdin.read()
    http.shutdown()
    grpc_server.stop(0)


if __name__ == "__main__":
    main()

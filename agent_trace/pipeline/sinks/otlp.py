"""OTLP sinks: gRPC or HTTP/protobuf to Jaeger or a Collector, and Sentry's OTLP endpoint."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agent_trace._config import redact_endpoint

__all__ = ["OtlpSink"]

# The OTLP exporters log an ERROR per failed batch; our worker already warns once a minute
# with the drop counts, so their repeats are filtered to one per message a minute.
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
)


class _OncePerMinute(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = f"{record.name}:{record.msg}"
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < 60.0:
                return False
            self._last[key] = now
        return True


_filter = _OncePerMinute()
for _name in _EXPORTER_LOGGERS:
    logging.getLogger(_name).addFilter(_filter)

_logger = logging.getLogger(__name__)


def _our_request(spans: Sequence[ReadableSpan]) -> bytes | None:
    """The export request written by our encoder; None for a batch it refuses (a value it does
    not take), which the stock encoder then sends what it can of."""
    from agent_trace.pipeline.sinks import otlp_proto

    try:
        return otlp_proto.encode_request(spans)
    except Exception:
        _logger.debug(
            "our encoder refused a batch of %d spans; the stock one sends it",
            len(spans),
            exc_info=True,
        )
        return None


@cache
def _grpc_exporter_class() -> Callable[..., SpanExporter]:
    """The gRPC exporter with our encoder (`otlp_proto`), built on first use of gRPC."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    class FastGrpcExporter(OTLPSpanExporter):
        def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
            request = _our_request(data)
            if request is None:
                return super()._translate_data(data)
            # Parsing our bytes in C costs a fraction of building the message in Python.
            return ExportTraceServiceRequest.FromString(request)

    return FastGrpcExporter


@cache
def _http_exporter_class() -> Callable[..., SpanExporter]:
    """The HTTP/protobuf exporter with our encoder, built on first use of HTTP.

    The stock exporter encodes inside `export` itself, so the override does what it does with
    our bytes: the same size limit, its own client (compression, retries, timeout) and its
    export metrics. A version of the exporter without those parts exports the stock way.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    try:
        from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError
    except ImportError:
        too_large: type[Exception] | None = None
    else:
        too_large = RequestPayloadTooLargeError
    # The stock exporter's logger: its warnings keep their name and our once-a-minute filter.
    stock_logger = logging.getLogger(OTLPSpanExporter.__module__)

    class FastHttpExporter(OTLPSpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            client: Any = getattr(self, "_client", None)
            metrics: Any = getattr(self, "_metrics", None)
            limit: Any = getattr(self, "_max_request_size", None)
            if getattr(self, "_shutdown", True) or None in (client, metrics, limit):
                return super().export(spans)
            data = _our_request(spans)
            if data is None:
                return super().export(spans)
            size = len(data)
            if limit > 0 and size > limit:
                # Refused as the stock export refuses it, without encoding it a second time: for
                # a batch of 64 MiB that cost 0.5 s and held our request beside the stock one's.
                del data
                if too_large is None:
                    return super().export(spans)
                with metrics.export_operation(len(spans)) as result:
                    stock_logger.warning(
                        "agent-trace: a batch of %d spans is %d bytes as OTLP, over the "
                        "exporter's max_request_size of %d bytes: not sent",
                        len(spans),
                        size,
                        limit,
                    )
                    result.error = too_large(f"{size} bytes, over the limit of {limit}")
                return SpanExportResult.FAILURE
            with metrics.export_operation(len(spans)) as result:
                outcome = client.export(data)
                if not outcome.success:
                    result.error = outcome.error
                    if outcome.status_code is not None:
                        result.error_attrs = {"http.response.status_code": outcome.status_code}
                    return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS

    return FastHttpExporter


class OtlpSink:
    """Wraps one of the OpenTelemetry OTLP span exporters."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        *,
        protocol: str,
        headers: Mapping[str, str],
        timeout_s: float,
        shown_endpoint: str | None = None,
    ) -> None:
        self.name = name
        # Shown in export-failure warnings and `doctor`: never the endpoint's user:password.
        self._shown = redact_endpoint(shown_endpoint or endpoint)
        self._settings = (endpoint, protocol, dict(headers), timeout_s)
        self._exporter: SpanExporter = self._build()
        # Exporters a forked child replaced; kept so that the child never closes them.
        self._inherited: list[SpanExporter] = []
        sink = weakref.ref(self)

        def after_fork() -> None:
            alive = sink()
            if alive is not None:
                alive._after_fork()

        os.register_at_fork(after_in_child=after_fork)

    def _build(self) -> SpanExporter:
        endpoint, protocol, headers, timeout_s = self._settings
        if protocol == "grpc":
            insecure = endpoint.startswith("http://")
            return _grpc_exporter_class()(
                endpoint=endpoint, insecure=insecure, headers=headers, timeout=timeout_s
            )
        return _http_exporter_class()(endpoint=endpoint, headers=headers, timeout=timeout_s)

    def _after_fork(self) -> None:
        # A forked child must not write into the parent's keep-alive connections (their
        # requests would interleave on one socket) nor use its gRPC channel: start afresh.
        inherited, self._exporter = self._exporter, self._build()
        # The HTTP exporter's connections: its session in older versions, its client's
        # transport since 1.45. Closing the child's copies of the sockets leaves the parent's
        # connections open. A gRPC channel is kept, unused: closing it would shut the parent's.
        closable: Any = getattr(inherited, "_session", None)
        if closable is None:
            closable = getattr(getattr(inherited, "_client", None), "_transport", None)
        if callable(getattr(closable, "close", None)):
            closable.close()
        else:
            self._inherited.append(inherited)

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        # A paced batch (see `_pacing`) paces the exporter's encoding as it walks the spans.
        return self._exporter.export(spans) is SpanExportResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def describe(self) -> str:
        return self._shown

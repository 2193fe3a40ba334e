"""OTLP sinks: gRPC or HTTP/protobuf to Jaeger or a Collector, and Sentry's OTLP endpoint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["OtlpSink"]


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
        self._shown = shown_endpoint or endpoint
        self._exporter: SpanExporter
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            insecure = endpoint.startswith("http://")
            self._exporter = GrpcExporter(
                endpoint=endpoint, insecure=insecure, headers=dict(headers), timeout=timeout_s
            )
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            self._exporter = HttpExporter(
                endpoint=endpoint, headers=dict(headers), timeout=timeout_s
            )

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        return self._exporter.export(spans) is SpanExportResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def describe(self) -> str:
        return self._shown

"""Encodes finished spans as OTLP/JSON `ExportTraceServiceRequest` objects.

The shape is the one the OTLP specification gives for JSON: ids as lowercase hex, 64-bit
integers and nanosecond times as decimal strings, enums as integers, attribute values tagged
by type. The OpenTelemetry Collector's `otlpjsonfile` receiver reads a file of such lines.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

__all__ = ["any_value", "encode_request", "key_values"]

_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
# proto3's JSON mapping spells non-finite doubles as strings; JSON itself has no such numbers.
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def any_value(value: AttributeValue) -> dict[str, Any]:
    # The model only sets scalars and homogeneous arrays, but spans of other instrumentation
    # (and `scope.span.set_attribute`) may carry the SDK's full AnyValue: maps, bytes, None.
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else _NON_FINITE[str(value)]}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": key_values(value)}}
    if value is None:
        return {}
    return {"arrayValue": {"values": [any_value(v) for v in value]}}


def key_values(attrs: Mapping[str, AttributeValue] | None) -> list[dict[str, Any]]:
    if not attrs:
        return []
    return [{"key": k, "value": any_value(v)} for k, v in attrs.items()]


def _span(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    assert ctx is not None  # finished SDK spans always have a context
    out: dict[str, Any] = {
        "traceId": f"{ctx.trace_id:032x}",
        "spanId": f"{ctx.span_id:016x}",
        "name": span.name,
        "kind": _KIND.get(span.kind, 1),
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": key_values(span.attributes),
        "flags": int(ctx.trace_flags) | (0x300 if span.parent and span.parent.is_remote else 0x100),
    }
    if ctx.trace_state:
        out["traceState"] = ctx.trace_state.to_header()
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    dropped = getattr(span, "dropped_attributes", 0)
    if dropped:
        out["droppedAttributesCount"] = dropped
    if span.events:
        out["events"] = [
            {
                "timeUnixNano": str(e.timestamp),
                "name": e.name,
                "attributes": key_values(e.attributes),
            }
            for e in span.events
        ]
    if span.links:
        out["links"] = [
            {
                "traceId": f"{link.context.trace_id:032x}",
                "spanId": f"{link.context.span_id:016x}",
                "attributes": key_values(link.attributes),
            }
            for link in span.links
        ]
    status: dict[str, Any] = {"code": _STATUS[span.status.status_code]}
    if span.status.description:
        status["message"] = span.status.description
    out["status"] = status
    return out


def encode_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Group spans by resource and instrumentation scope into one export request."""
    by_resource: dict[int, tuple[Any, dict[tuple[str, str | None], list[dict[str, Any]]]]] = {}
    for span in spans:
        resource = span.resource
        entry = by_resource.setdefault(id(resource), (resource, {}))
        scope = span.instrumentation_scope
        scope_key = (scope.name, scope.version) if scope else ("", None)
        entry[1].setdefault(scope_key, []).append(_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values(resource.attributes)},
                "scopeSpans": [
                    {"scope": _scope(name, version), "spans": encoded}
                    for (name, version), encoded in scopes.items()
                ],
            }
            for resource, scopes in by_resource.values()
        ]
    }


def _scope(name: str, version: str | None) -> dict[str, Any]:
    return {"name": name, "version": version} if version else {"name": name}


def iter_encoded(spans: Iterable[ReadableSpan]) -> Iterable[dict[str, Any]]:
    for span in spans:
        yield _span(span)

"""Finished spans as Sentry transactions: one per local root, its descendants as spans.

Children usually end before their parent, so the sink parks each finished span's subtree under
its parent's id until that parent ends; a span with no local parent closes a transaction. A
subtree whose parent never arrives (a span left open, a background task outliving its
request) is sent as a transaction of its own at the next flush or, the one idle longest first,
when the parking area is full: it keeps its `parent_span_id`, so Sentry still places it in
the trace.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from agent_trace._attributes import CONSTITUTION_HASH, CONVERSATION_ID, SENTRY_OP
from agent_trace._version import __version__
from agent_trace.pipeline.sinks._pacing import Pacer, pacer_for

__all__ = ["SentryEnvelopeSink", "build_transaction", "span_to_sentry"]

_ORIGIN = "auto.agent_trace"
_KIND_OPS = {
    SpanKind.SERVER: "http.server",
    SpanKind.CLIENT: "http.client",
    SpanKind.PRODUCER: "queue.publish",
    SpanKind.CONSUMER: "queue.process",
}


def _status(span: ReadableSpan, attrs: Mapping[str, Any]) -> str:
    if span.status.status_code is StatusCode.ERROR:
        return "internal_error"
    if attrs.get("agent_trace.cancelled"):
        return "cancelled"
    return "ok"


def _op(span: ReadableSpan, attrs: Mapping[str, Any]) -> str:
    op = attrs.get(SENTRY_OP)
    if isinstance(op, str) and op:
        return op
    return _KIND_OPS.get(span.kind, "default")


def _data(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attributes as a new dict of JSON-safe values."""
    if not attrs:
        return {}
    # The SDK hands out its attributes behind read-only mappings whose item-by-item access
    # goes through Python code; their `copy()` is the underlying dict's, made in C.
    copy = getattr(attrs, "copy", None)
    data = copy() if copy is not None else None
    if type(data) is not dict:
        data = dict(attrs)
    unsafe = None
    for key, value in data.items():
        kind = type(value)
        # Texts, integers, booleans and finite floats are JSON as they are: almost every value.
        if kind is str or kind is int or kind is bool or (kind is float and value - value == 0):
            continue
        if unsafe is None:
            unsafe = []
        unsafe.append(key)
    if unsafe is not None:
        for key in unsafe:
            data[key] = _json_safe(data[key])
    return data


def _json_safe(value: Any, depth: int = 0) -> Any:
    """An attribute value as JSON: the envelope is serialised with `allow_nan=False`, and one
    bytes or NaN value set through the raw OpenTelemetry API would lose the whole transaction."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if depth > 8:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    return value


def span_to_sentry(span: ReadableSpan) -> dict[str, Any]:
    """A Sentry span (also the shape of a transaction's trace context) for an OTel span."""
    ctx = span.context
    assert ctx is not None
    data = _data(span.attributes)
    start_ns = span.start_time or 0
    out: dict[str, Any] = {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "op": _op(span, data),
        "description": span.name,
        "start_timestamp": start_ns / 1e9,
        "timestamp": (span.end_time or start_ns) / 1e9,
        "status": _status(span, data),
        "origin": _ORIGIN,
        "data": data,
    }
    parent = span.parent
    if parent is not None:
        out["parent_span_id"] = f"{parent.span_id:016x}"
    return out


def build_transaction(
    root: ReadableSpan,
    children: Sequence[dict[str, Any]],
    *,
    environment: str | None,
    release: str | None,
) -> dict[str, Any]:
    """A transaction event for `root` with already converted descendant spans."""
    trace_ctx = span_to_sentry(root)
    start_timestamp = trace_ctx.pop("start_timestamp")
    timestamp = trace_ctx.pop("timestamp")
    del trace_ctx["description"]
    attrs = trace_ctx["data"]
    tags: dict[str, str] = {}
    if isinstance(attrs.get(CONSTITUTION_HASH), str):
        tags["constitutional_hash"] = attrs[CONSTITUTION_HASH]
    if isinstance(attrs.get(CONVERSATION_ID), str):
        tags["conversation_id"] = attrs[CONVERSATION_ID]
    resource = root.resource.attributes
    service = resource.get("service.name")
    if service:
        tags["service"] = str(service)
    event: dict[str, Any] = {
        "type": "transaction",
        "event_id": uuid.uuid4().hex,
        "platform": "python",
        "transaction": root.name,
        "transaction_info": {"source": "custom"},
        "start_timestamp": start_timestamp,
        "timestamp": timestamp,
        "contexts": {"trace": trace_ctx, "otel": {"resource": _data(resource)}},
        "spans": list(children),
        "tags": tags,
        "sdk": {"name": "agent-trace", "version": __version__},
    }
    if environment:
        event["environment"] = environment
    if release:
        event["release"] = release
    return event


class SentryEnvelopeSink:
    """Sends transactions through sentry-sdk's transport (its own thread does the HTTP)."""

    name = "sentry"

    def __init__(self, client: Any, *, max_parked_spans: int = 20_000) -> None:
        self._client = client
        self._max_parked = max_parked_spans
        # parent span id -> converted spans of finished descendants waiting for that parent
        self._parked: OrderedDict[int, list[dict[str, Any]]] = OrderedDict()
        self._parked_roots: dict[int, ReadableSpan] = {}
        self._parked_count = 0
        self._lock = threading.Lock()
        self.transactions_sent = 0
        self._lost_at_last_flush = 0

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        ready: list[tuple[ReadableSpan, list[dict[str, Any]]]] = []
        # Converting a batch is pure Python: a paced batch lets the application's threads in.
        pacer = pacer_for(spans)
        with self._lock:
            for span in spans:
                pacer.tick()
                ctx = span.context
                assert ctx is not None
                descendants = self._parked.pop(ctx.span_id, [])
                self._parked_roots.pop(ctx.span_id, None)
                self._parked_count -= len(descendants)
                if span.parent is None or span.parent.is_remote:
                    ready.append((span, descendants))
                    continue
                parent_id = span.parent.span_id
                bucket = self._parked.setdefault(parent_id, [])
                bucket.append(span_to_sentry(span))
                bucket.extend(descendants)
                self._parked_count += 1 + len(descendants)
                # Overflow evicts the bucket idle longest, not the oldest: a long session whose
                # turns keep finishing stays parked while crashed agents' leftovers go first.
                self._parked.move_to_end(parent_id)
                # Remember the topmost finished span of the bucket in case the parent never comes.
                self._parked_roots.setdefault(parent_id, span)
            while self._parked_count > self._max_parked and self._parked:
                ready.append(self._unpark_oldest())
        return self._send(ready, pacer)

    def _unpark_oldest(self) -> tuple[ReadableSpan, list[dict[str, Any]]]:
        parent_id, bucket = self._parked.popitem(last=False)
        self._parked_count -= len(bucket)
        top = self._parked_roots.pop(parent_id)
        top_id = f"{top.context.span_id:016x}" if top.context else ""
        return top, [s for s in bucket if s["span_id"] != top_id]

    def _send(
        self, ready: Sequence[tuple[ReadableSpan, list[dict[str, Any]]]], pacer: Pacer
    ) -> bool:
        if not ready:
            return True
        from sentry_sdk.envelope import Envelope

        transport = self._client.transport()
        if transport is None:
            return False
        dsn = self._client.dsn
        for root, children in ready:
            pacer.tick()
            event = build_transaction(
                root,
                children,
                environment=self._client.environment,
                release=self._client.release,
            )
            envelope = Envelope(
                headers={
                    "event_id": event["event_id"],
                    "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "trace": {
                        "trace_id": event["contexts"]["trace"]["trace_id"],
                        "public_key": dsn.public_key,
                        "sampled": "true",
                        **({"environment": event["environment"]} if "environment" in event else {}),
                        **({"release": event["release"]} if "release" in event else {}),
                        "transaction": event["transaction"],
                    },
                }
            )
            # Built as a plain dict; sentry-sdk's `Event` TypedDict is the same JSON shape.
            envelope.add_transaction(event)  # type: ignore[arg-type]
            transport.capture_envelope(envelope)
            self.transactions_sent += 1
        return True

    def flush(self, timeout_s: float) -> bool:
        # A flush delivers everything finished, so subtrees still waiting for a parent go now.
        with self._lock:
            ready = [self._unpark_oldest() for _ in range(len(self._parked))]
        self._send(ready, Pacer())
        flushed = self._client.flush(timeout_s)
        # `capture_envelope` only queues: a transaction the transport lost since the last flush
        # (Sentry refusing connections, say) means this flush did not deliver everything.
        lost = getattr(self._client, "lost_transactions", 0)
        delivered = lost == self._lost_at_last_flush
        self._lost_at_last_flush = lost
        return bool(flushed) and delivered

    def shutdown(self) -> None:
        return None

    def describe(self) -> str:
        return str(self._client.dsn.redacted)

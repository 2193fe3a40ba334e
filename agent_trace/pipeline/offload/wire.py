"""What the application process and its export process say to each other over their pipes.

A frame is a 4-byte little-endian length and a `marshal` payload: a tuple whose first item
names the message. `marshal` is written in C and handles exactly the values a span carries
(texts, numbers, booleans, bytes, tuples, lists, dicts); both ends are the same interpreter,
started from the same executable, so its version-specific format is never a problem. Nothing
else ever writes to these pipes.

A span travels as a flat tuple (`span_tuple`), read straight from the SDK's stored fields: the
application process spends about a tenth of what encoding it as OTLP protobuf or Sentry JSON
costs, and the encoding happens in the export process, on another core and under another GIL.
"""

from __future__ import annotations

import marshal
import os
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

__all__ = [
    "MAX_FRAME",
    "FdStream",
    "FrameReader",
    "encode_spans",
    "frame",
    "resource_tuple",
    "write_all",
]

_HEADER = struct.Struct("<I")
# A frame larger than this is a broken stream, not a batch: the reader stops there.
MAX_FRAME = 256 * 1024 * 1024
_PRIMITIVES = (str, bool, int, float, bytes)
_KINDS = {kind.value: kind for kind in SpanKind}
_CODES = {code.value: code for code in StatusCode}
_MISSING = object()


def frame(message: tuple[Any, ...]) -> bytes:
    payload = marshal.dumps(message)
    return _HEADER.pack(len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to a blocking descriptor (the GIL is free while the pipe is full)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Readable(Protocol):
    def read(self, size: int, /) -> bytes | None: ...


class FrameReader:
    """Reads frames from a blocking binary stream; `next()` is None at the end of the stream."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream

    def next(self) -> tuple[Any, ...] | None:
        head = self._read(_HEADER.size)
        if head is None:
            return None
        (length,) = _HEADER.unpack(head)
        if length > MAX_FRAME:
            raise ValueError(f"a frame of {length} bytes: the stream is broken")
        payload = self._read(length)
        if payload is None:
            return None
        message = marshal.loads(payload)
        if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
            raise ValueError("a frame that is not a message")
        return message

    def _read(self, size: int) -> bytes | None:
        data = self._stream.read(size)
        if data is None or len(data) < size:
            return None
        return data


class FdStream:
    """Reads a descriptor with `os.read`: no buffer object and so no lock, which a forked
    child could inherit held by a reader thread it does not have."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, size: int) -> bytes:
        parts = []
        while size > 0:
            chunk = os.read(self.fd, min(size, 1 << 20))
            if not chunk:
                break
            parts.append(chunk)
            size -= len(chunk)
        return b"".join(parts)


# -- spans ------------------------------------------------------------------------------------


def resource_tuple(resource: Resource) -> tuple[dict[str, Any], str]:
    return dict(resource.attributes), resource.schema_url


def _plain(value: Any) -> Any:
    """An attribute value `marshal` takes: what OpenTelemetry allows, anything else as text."""
    if isinstance(value, _PRIMITIVES) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_plain(item) for item in value)
    return str(value)


def _attributes(stored: Any) -> dict[str, Any] | None:
    if not stored:
        return None
    # The SDK's BoundedAttributes keeps a plain dict; its public view goes through Python code.
    inner = getattr(stored, "_dict", None)
    return dict(inner) if type(inner) is dict else dict(stored)


def _dropped(stored: Any) -> int:
    return int(getattr(stored, "dropped", 0) or 0)


def _context(ctx: SpanContext) -> tuple[int, int, int, bool, tuple[tuple[str, str], ...] | None]:
    state = ctx.trace_state
    return (
        ctx.trace_id,
        ctx.span_id,
        int(ctx.trace_flags),
        ctx.is_remote,
        tuple(state.items()) if state else None,
    )


_Scope = tuple[str, str | None, str | None]


class SpanEncoder:
    """Turns finished spans into tuples; scopes are converted once each."""

    def __init__(self, resource: Resource | None) -> None:
        self._resource = resource
        self._scopes: dict[int, tuple[InstrumentationScope, _Scope]] = {}

    def span(self, span: ReadableSpan) -> tuple[Any, ...]:
        # The SDK's stored fields where the span has them: its properties are Python calls.
        stored = getattr(span, "__dict__", None) or {}
        get = stored.get
        ctx = get("_context") or span.context
        parent = get("_parent", _MISSING)
        if parent is _MISSING:
            parent = span.parent
        status = get("_status") or span.status
        stored_attrs = get("_attributes", _MISSING)
        if stored_attrs is _MISSING:
            stored_attrs = span.attributes
        events = get("_events", _MISSING)
        if events is _MISSING:
            events = span.events
        links = get("_links", _MISSING)
        if links is _MISSING:
            links = span.links
        resource = get("_resource") or span.resource
        return (
            get("_name") or span.name,
            _context(ctx),
            None if parent is None else _context(parent),
            (get("_kind") or span.kind).value,
            get("_start_time") or span.start_time,
            get("_end_time") or span.end_time,
            status.status_code.value,
            status.description,
            _attributes(stored_attrs),
            _dropped(stored_attrs),
            tuple((event.name, event.timestamp, _attributes(event.attributes)) for event in events)
            if events
            else None,
            _dropped(events),
            tuple((_context(link.context), _attributes(link.attributes)) for link in links)
            if links
            else None,
            _dropped(links),
            self._scope(get("_instrumentation_scope") or span.instrumentation_scope),
            None if resource is self._resource else resource_tuple(resource),
        )

    def _scope(self, scope: InstrumentationScope | None) -> _Scope | None:
        if scope is None:
            return None
        cached = self._scopes.get(id(scope))
        if cached is not None and cached[0] is scope:
            return cached[1]
        converted = (scope.name, scope.version, scope.schema_url)
        if len(self._scopes) > 1000:
            self._scopes.clear()
        self._scopes[id(scope)] = (scope, converted)
        return converted

    def plain(self, span: ReadableSpan) -> tuple[Any, ...]:
        """`span()` with every attribute value made marshal-safe (the slow path)."""
        fields = list(self.span(span))

        def clean(attrs: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if attrs is None else {str(k): _plain(v) for k, v in attrs.items()}

        fields[8] = clean(fields[8])
        if fields[10]:
            fields[10] = tuple((str(n), t, clean(a)) for n, t, a in fields[10])
        if fields[12]:
            fields[12] = tuple((c, clean(a)) for c, a in fields[12])
        if fields[15]:
            fields[15] = (clean(fields[15][0]), fields[15][1])
        return tuple(fields)


def encode_spans(encoder: SpanEncoder, spans: Iterable[ReadableSpan]) -> tuple[bytes, int]:
    """One `spans` frame, and how many spans could not be carried (left out of it)."""
    converted = [encoder.span(span) for span in spans]
    try:
        return frame(("spans", converted)), 0
    except ValueError:
        pass  # A value marshal refuses (set through the raw API): find it span by span.
    kept = []
    lost = 0
    for item, span in zip(converted, spans, strict=False):
        try:
            marshal.dumps(item)
            kept.append(item)
        except ValueError:
            try:
                safe = encoder.plain(span)
                marshal.dumps(safe)
                kept.append(safe)
            except Exception:
                lost += 1
    return frame(("spans", kept)), lost


# -- the export process's side ------------------------------------------------------------------


def _span_context(raw: Sequence[Any]) -> SpanContext:
    trace_id, span_id, flags, is_remote, state = raw
    return SpanContext(
        trace_id,
        span_id,
        is_remote=is_remote,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState(list(state)) if state else None,
    )


def _bounded(attrs: dict[str, Any] | None, dropped: int) -> Any:
    if not dropped:
        return attrs
    from opentelemetry.attributes import BoundedAttributes

    bounded = BoundedAttributes(attributes=attrs or {}, immutable=True)
    bounded.dropped = dropped
    return bounded


class SpanDecoder:
    """Rebuilds SDK spans from `SpanEncoder` tuples, with the application's resource."""

    def __init__(self, resource: Resource) -> None:
        self._resource = resource
        self._scopes: dict[tuple[Any, ...], InstrumentationScope] = {}

    def span(self, raw: Sequence[Any]) -> ReadableSpan:
        (
            name,
            ctx,
            parent,
            kind,
            start,
            end,
            code,
            description,
            attrs,
            dropped_attrs,
            events,
            dropped_events,
            links,
            dropped_links,
            scope,
            resource,
        ) = raw
        event_list: Sequence[Event] = tuple(Event(n, a, t) for n, t, a in events) if events else ()
        if dropped_events:
            event_list = BoundedList.from_seq(None, event_list)
            event_list.dropped = dropped_events
        link_list: Sequence[Link] = (
            tuple(Link(_span_context(c), a) for c, a in links) if links else ()
        )
        if dropped_links:
            link_list = BoundedList.from_seq(None, link_list)
            link_list.dropped = dropped_links
        return ReadableSpan(
            name,
            context=_span_context(ctx),
            parent=None if parent is None else _span_context(parent),
            resource=self._resource if resource is None else Resource(resource[0], resource[1]),
            attributes=_bounded(attrs, dropped_attrs),
            events=event_list,
            links=link_list,
            kind=_KINDS.get(kind, SpanKind.INTERNAL),
            status=Status(_CODES.get(code, StatusCode.UNSET), description),
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope(scope),
        )

    def _scope(self, raw: Sequence[Any] | None) -> InstrumentationScope | None:
        if raw is None:
            return None
        key = tuple(raw)
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = InstrumentationScope(*key)
        return scope

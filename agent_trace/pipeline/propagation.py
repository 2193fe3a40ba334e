"""Trace context across processes: W3C `traceparent`/`tracestate`, `baggage` and `sentry-trace`.

Injecting writes exactly one value of each header. Extracting trusts a header only as far as
the W3C and Sentry rules allow: a `traceparent` that is malformed, oversized or present more
than once is ignored (the request starts a fresh trace rather than half-reusing ids);
`sentry-trace` is used only when there is no valid `traceparent`; incoming baggage is kept for
propagation but never turned into span attributes. Header values that are not text (bytes a
getter did not decode, None, numbers) are ignored: they neither raise nor cost the request a
valid parent.

The outgoing `baggage` header stays within the W3C limits that receivers apply (8192 bytes, 180
entries, 4096 bytes an entry), since a receiver drops a header over them whole: Sentry's
`sentry-*` entries come first, then the application's entries in order, leaving out each one
that would pass a limit. What is left out is counted by reason
(`AgentTracePropagator.baggage_left_out()`) and logged at most once a minute.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from agent_trace._log import warn_once

__all__ = ["SENTRY_TRACE_HEADER", "AgentTracePropagator"]

SENTRY_TRACE_HEADER = "sentry-trace"
_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"
_BAGGAGE = "baggage"
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SENTRY_TRACE_RE = re.compile(r"^([0-9a-f]{32})-([0-9a-f]{16})(?:-([01]))?$")
_MAX_TRACESTATE = 512
# The W3C baggage limits, as OpenTelemetry's W3CBaggagePropagator applies them on receipt.
_MAX_BAGGAGE = 8192
_MAX_BAGGAGE_ENTRY = 4096
_MAX_BAGGAGE_ENTRIES = 180

_log = logging.getLogger(__name__)


def _single(getter: Getter[Any], carrier: Any, key: str, limit: int) -> str | None:
    """The header's one value, or None if absent, repeated, too long or not plain ASCII."""
    values = getter.get(carrier, key)
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    try:
        values = list(values)
    except TypeError:
        # A getter handing over a single non-text value (an int, say) rather than a list.
        return None
    if len(values) != 1:
        return None
    value = values[0]
    if not isinstance(value, str) or len(value) > limit or not value.isascii():
        return None
    return value.strip()


def _text_baggage(values: Any) -> str | None:
    """The baggage header lines that are text, joined; None when there are none.

    Decoding bytes is the getter's work (OpenTelemetry's ASGI and Kafka getters do it). A value
    of another type that reaches a propagator (bytes through the default getter of a Kafka-style
    carrier, None, a number) is not a header line and is left out, so that it can neither raise
    nor cost the request its parent.
    """
    if values is None:
        return None
    if isinstance(values, str):
        return values
    try:
        lines = [value for value in values if isinstance(value, str)]
    except TypeError:
        return None
    return ",".join(lines) or None


def _parse_traceparent(value: str) -> SpanContext | None:
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex = match.groups()
    # Version ff is forbidden; a version 00 header must be exactly 55 characters (it is, by
    # the regex), and all-zero ids are invalid.
    if version == "ff":
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(flags_hex, 16) & 1)
    )


def _parse_sentry_trace(value: str) -> SpanContext | None:
    match = _SENTRY_TRACE_RE.match(value)
    if match is None:
        return None
    trace_hex, span_hex, sampled = match.groups()
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    # A missing sampling flag defers the decision; our parent-based sampler then keeps it.
    flags = TraceFlags(0 if sampled == "0" else 1)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


class AgentTracePropagator(TextMapPropagator):
    """Installed as the global propagator by `agent_trace.configure()`."""

    def __init__(self, dsc: dict[str, str] | None = None) -> None:
        # Sentry's dynamic sampling context entries sent along in `baggage` (sentry-*).
        self._dsc = dict(dsc or {})
        self._baggage = W3CBaggagePropagator()
        self._lock = threading.Lock()
        self._left_out: dict[str, int] = {}

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        ctx = context if context is not None else Context()
        parent: SpanContext | None = None
        raw = _single(getter, carrier, _TRACEPARENT, 55)
        if raw is not None:
            parent = _parse_traceparent(raw)
            if parent is not None:
                state = _single(getter, carrier, _TRACESTATE, _MAX_TRACESTATE)
                if state:
                    # A tracestate that does not parse is dropped; the traceparent still holds.
                    with contextlib.suppress(Exception):
                        parent = SpanContext(
                            parent.trace_id,
                            parent.span_id,
                            is_remote=True,
                            trace_flags=parent.trace_flags,
                            trace_state=TraceState.from_header([state]),
                        )
        if parent is None and getter.get(carrier, _TRACEPARENT) is None:
            sentry = _single(getter, carrier, SENTRY_TRACE_HEADER, 60)
            if sentry is not None:
                parent = _parse_sentry_trace(sentry)
        if parent is not None:
            ctx = trace.set_span_in_context(NonRecordingSpan(parent), ctx)

        joined = _text_baggage(getter.get(carrier, _BAGGAGE))
        if joined and len(joined) <= _MAX_BAGGAGE and joined.isascii():
            ctx = self._baggage.extract({_BAGGAGE: joined}, ctx)
        return ctx

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span_ctx = trace.get_current_span(context).get_span_context()
        if not span_ctx.is_valid:
            return
        trace_hex, span_hex = f"{span_ctx.trace_id:032x}", f"{span_ctx.span_id:016x}"
        sampled = span_ctx.trace_flags.sampled
        setter.set(carrier, _TRACEPARENT, f"00-{trace_hex}-{span_hex}-{'01' if sampled else '00'}")
        if span_ctx.trace_state:
            setter.set(carrier, _TRACESTATE, span_ctx.trace_state.to_header())
        setter.set(
            carrier, SENTRY_TRACE_HEADER, f"{trace_hex}-{span_hex}-{'1' if sampled else '0'}"
        )
        setter.set(carrier, _BAGGAGE, self._baggage_value(context, trace_hex, sampled))

    def _baggage_value(self, context: Context | None, trace_hex: str, sampled: bool) -> str:
        """Sentry's entries first, then the application's that still fit the W3C limits.

        A receiver drops a whole header over the limits (Sentry's entries with it), so the
        header is bounded here, and the application entries are the ones left out.
        """
        dsc = {"sentry-trace_id": trace_hex, "sentry-sampled": "true" if sampled else "false"}
        dsc.update(self._dsc)
        entries = [f"{k}={_encode(v)}" for k, v in dsc.items()]
        size = sum(len(entry) for entry in entries) + len(entries) - 1

        left_out: dict[str, int] = {}
        for key, value in baggage.get_all(context).items():
            if key.startswith("sentry-"):
                continue
            entry = f"{_encode(key)}={_encode(str(value))}"
            if len(entry) > _MAX_BAGGAGE_ENTRY:
                reason = "entry_too_long"
            elif len(entries) >= _MAX_BAGGAGE_ENTRIES:
                reason = "too_many_entries"
            elif size + 1 + len(entry) > _MAX_BAGGAGE:
                reason = "header_too_long"
            else:
                entries.append(entry)
                size += 1 + len(entry)
                continue
            left_out[reason] = left_out.get(reason, 0) + 1

        if left_out:
            self._count_left_out(left_out)
        return ",".join(entries)

    def _count_left_out(self, left_out: dict[str, int]) -> None:
        with self._lock:
            for reason, count in left_out.items():
                self._left_out[reason] = self._left_out.get(reason, 0) + count
        warn_once(
            _log,
            "baggage-limit",
            "agent-trace: %d outgoing baggage entries left out to keep the header within the "
            "W3C limits (%s); see AgentTracePropagator.baggage_left_out()",
            sum(left_out.values()),
            ", ".join(f"{reason}: {count}" for reason, count in sorted(left_out.items())),
        )

    def baggage_left_out(self) -> dict[str, int]:
        """Outgoing baggage entries left out so far, by reason; for tests and diagnostics.

        Reasons: `entry_too_long` (over 4096 bytes), `too_many_entries` (over 180 with
        Sentry's), `header_too_long` (the header would pass 8192 bytes).
        """
        with self._lock:
            return dict(self._left_out)

    @property
    def fields(self) -> set[str]:
        return {_TRACEPARENT, _TRACESTATE, _BAGGAGE, SENTRY_TRACE_HEADER}


def _encode(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def header_values(headers: Iterable[tuple[str, str]], name: str) -> Sequence[str]:
    """All values of `name` in a list of header pairs (case-insensitive); for tests and doctor."""
    return [v for k, v in headers if k.lower() == name]

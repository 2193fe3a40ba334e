"""Trace context across processes: W3C `traceparent`/`tracestate`, `baggage` and `sentry-trace`.

Injecting writes exactly one value of each header. Extracting trusts a header only as far as
the W3C and Sentry rules allow: a `traceparent` that is malformed, oversized or present more
than once is ignored (the request starts a fresh trace rather than half-reusing ids);
`sentry-trace` is used only when there is no valid `traceparent`; incoming baggage is kept for
propagation but never turned into span attributes.
"""

from __future__ import annotations

import contextlib
import re
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

__all__ = ["SENTRY_TRACE_HEADER", "AgentTracePropagator"]

SENTRY_TRACE_HEADER = "sentry-trace"
_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"
_BAGGAGE = "baggage"
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SENTRY_TRACE_RE = re.compile(r"^([0-9a-f]{32})-([0-9a-f]{16})(?:-([01]))?$")
_MAX_TRACESTATE = 512
_MAX_BAGGAGE = 8192


def _single(getter: Getter[Any], carrier: Any, key: str, limit: int) -> str | None:
    """The header's one value, or None if absent, repeated, too long or not plain ASCII."""
    values = getter.get(carrier, key)
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    values = list(values)
    if len(values) != 1:
        return None
    value = values[0]
    if not isinstance(value, str) or len(value) > limit or not value.isascii():
        return None
    return value.strip()


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

        values = getter.get(carrier, _BAGGAGE)
        if values:
            joined = ",".join([values] if isinstance(values, str) else list(values))
            if len(joined) <= _MAX_BAGGAGE and joined.isascii():
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
        entries = [
            f"{_encode(k)}={_encode(str(v))}"
            for k, v in baggage.get_all(context).items()
            if not k.startswith("sentry-")
        ]
        dsc = {"sentry-trace_id": trace_hex, "sentry-sampled": "true" if sampled else "false"}
        dsc.update(self._dsc)
        entries.extend(f"{k}={_encode(v)}" for k, v in dsc.items())
        return ",".join(entries)

    @property
    def fields(self) -> set[str]:
        return {_TRACEPARENT, _TRACESTATE, _BAGGAGE, SENTRY_TRACE_HEADER}


def _encode(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def header_values(headers: Iterable[tuple[str, str]], name: str) -> Sequence[str]:
    """All values of `name` in a list of header pairs (case-insensitive); for tests and doctor."""
    return [v for k, v in headers if k.lower() == name]

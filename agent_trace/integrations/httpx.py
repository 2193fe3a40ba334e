"""Calls from one agent to another over httpx carry the trace and the constitutional hash.

`instrument_client(client)` makes every request of an `httpx.Client` or `httpx.AsyncClient`
carry the current trace: exactly one `traceparent`, `baggage` and `sentry-trace` (and
`tracestate` when there is one), replacing any value the request already had, plus the
`Constitutional-Hash` header when a hash is configured. It makes no span of its own: open a
remote turn around the call, and the called agent's server span becomes that turn's child.

Example:
    >>> import httpx
    >>> from agent_trace.integrations.httpx import instrument_client
    >>> client = instrument_client(httpx.AsyncClient())
    >>> async with agent_trace.session("ethical_review") as s:
    ...     async with s.turn("legal", remote=True):          # a CLIENT span
    ...         await client.post("http://127.0.0.1:8001/turn", json={...})
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, TypeVar

from agent_trace.integrations import CONSTITUTIONAL_HASH_HEADER, _missing_extra

try:
    import httpx
except ImportError as error:  # pragma: no cover - exercised by a test that hides the extra
    raise _missing_extra(__name__, "fastapi", error) from error

from opentelemetry import baggage, propagate
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.textmap import Setter

from agent_trace import _api
from agent_trace._log import internal_error

__all__ = ["inject_headers", "instrument_client", "propagation_headers"]

_log = logging.getLogger(__name__)

ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)

_HOOK_MARK = "_agent_trace_hook"


class _ReplacingSetter(Setter[MutableMapping[str, str]]):
    """Sets a header to one value, dropping every value it had (httpx.Headers does so too)."""

    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[key] = value


_SETTER = _ReplacingSetter()


def inject_headers(
    headers: MutableMapping[str, str], *, constitutional_hash: bool = True
) -> MutableMapping[str, str]:
    """Write the current trace context (and the constitutional hash) into `headers`.

    Each propagation header ends up with exactly one value. Baggage entries already in
    `headers` are kept, merged with the baggage of the current context. Outside any span
    nothing about the trace is written. Returns `headers`.
    """
    try:
        ctx = otel_context.get_current()
        existing = headers.get("baggage")
        if existing:
            # Entries the caller put in the request stay; the context's win on a clash.
            current = baggage.get_all(ctx)
            given = baggage.get_all(W3CBaggagePropagator().extract({"baggage": existing}))
            for key, value in given.items():
                if key not in current:
                    ctx = baggage.set_baggage(key, value, ctx)
        propagate.inject(headers, context=ctx, setter=_SETTER)
        if constitutional_hash:
            settings = _api.settings()
            if settings is not None and settings.constitution_hash:
                headers[CONSTITUTIONAL_HASH_HEADER] = settings.constitution_hash
    except Exception:
        internal_error(_log, "injecting trace headers")
    return headers


def propagation_headers(*, constitutional_hash: bool = True) -> dict[str, str]:
    """The headers that carry the current trace to another service, as a new dict."""
    headers: dict[str, str] = {}
    inject_headers(headers, constitutional_hash=constitutional_hash)
    return headers


def instrument_client(client: ClientT, *, constitutional_hash: bool = True) -> ClientT:
    """Make every request of `client` carry the trace; calling it again changes nothing.

    The headers are written when the request is sent, from the context of the code sending it,
    so concurrent sessions sharing one client (and its keep-alive connections) stay apart.

    Args:
        client: an `httpx.Client` or `httpx.AsyncClient`; returned, instrumented.
        constitutional_hash: also send `Constitutional-Hash` when a hash is configured.
    """
    hooks = client.event_hooks
    if any(getattr(hook, _HOOK_MARK, False) for hook in hooks.get("request", ())):
        return client

    def add_headers(request: httpx.Request) -> None:
        inject_headers(request.headers, constitutional_hash=constitutional_hash)

    hook: Any
    if isinstance(client, httpx.AsyncClient):

        async def hook(request: httpx.Request) -> None:
            add_headers(request)

    else:
        hook = add_headers
    setattr(hook, _HOOK_MARK, True)
    hooks.setdefault("request", []).append(hook)
    client.event_hooks = hooks
    return client

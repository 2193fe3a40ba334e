"""sentry-sdk set up beside our tracer provider, never in its place.

sentry-sdk is initialised without its own tracing, without its default integrations and with
our scrubber as `before_send`; instead of `OTLPIntegration` (which replaces the global
propagator and patches `Span.record_exception` for every span) we register a function that
hands Sentry the current OpenTelemetry ids, so error events link to the active span.

The client is kept, not looked up again, so an application that calls `sentry_sdk.init()`
for its own project later neither receives agent-trace's events nor loses its client at
agent-trace's shutdown. Each transaction handed to the transport is followed until Sentry
answered it or the transport gave up on it: that is what flush reports and what shutdown
counts as dropped, since sentry-sdk's own flush says nothing about either.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace

from agent_trace._config import Settings
from agent_trace._log import internal_error, warn_once
from agent_trace.pipeline.drops import SHUTDOWN_TIMEOUT, DropCounter
from agent_trace.pipeline.scrub import CONTENT_PLACEHOLDER, REDACTED, Scrubber, scrub_text

__all__ = ["SentryClient", "scrub_event"]

_log = logging.getLogger(__name__)


def _current_otel_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _scrub_tree(value: Any, scrubber: Scrubber, depth: int = 0) -> Any:
    if depth > 20:
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and scrubber._drop_key(k) and k not in _KEEP
                else _scrub_tree(v, scrubber, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub_tree(v, scrubber, depth + 1) for v in value]
    return value


# Event fields whose names look secret but that Sentry needs as they are.
_KEEP = frozenset({"trace_id", "span_id", "parent_span_id", "public_key", "event_id"})


def scrub_event(event: dict[str, Any], scrubber: Scrubber) -> dict[str, Any]:
    """Scrub a Sentry event (error or transaction) the way spans are scrubbed."""
    # Alert events are written by agent-trace itself and carry no user content.
    if not scrubber.capture_content and event.get("logger") != "agent_trace.alerts":
        for exc in (event.get("exception") or {}).get("values") or []:
            if exc.get("value"):
                exc["value"] = CONTENT_PLACEHOLDER
        if "logentry" in event:
            event["logentry"] = {"message": CONTENT_PLACEHOLDER}
        if isinstance(event.get("message"), str):
            event["message"] = CONTENT_PLACEHOLDER
    scrubbed: dict[str, Any] = _scrub_tree(event, scrubber)
    return scrubbed


class SentryClient:
    """Owns (or borrows) the sentry-sdk client for one configuration."""

    def __init__(self, settings: Settings, scrubber: Scrubber, drops: DropCounter) -> None:
        import sentry_sdk
        from sentry_sdk.scope import register_external_propagation_context

        assert settings.sentry_dsn is not None
        self._sdk = sentry_sdk
        self._scrubber = scrubber
        self.dsn = settings.sentry_dsn
        self.environment = settings.sentry_environment
        self.release = settings.sentry_release
        existing = sentry_sdk.get_client()
        # Borrow a client the application set up for the same DSN; a closed one has no transport.
        self.owned = not (
            existing.is_active() and existing.transport is not None and existing.dsn == self.dsn.url
        )
        if self.owned:
            sentry_sdk.init(
                dsn=self.dsn.url,
                environment=settings.sentry_environment,
                release=settings.sentry_release,
                traces_sample_rate=None,
                default_integrations=False,
                auto_enabling_integrations=False,
                integrations=[],
                include_local_variables=False,
                # Our hooks take and return plain dicts: sentry-sdk's `Event` is a TypedDict
                # of the same JSON shape.
                before_send=self._before_send,  # type: ignore[arg-type]
                before_send_transaction=self._before_send,  # type: ignore[arg-type]
                before_breadcrumb=self._before_breadcrumb,
                transport_queue_size=max(100, settings.max_queue_size // 4),
                shutdown_timeout=settings.exit_timeout_s,
            )
        # Kept, not looked up again: an application calling sentry_sdk.init() later replaces
        # the global client, and agent-trace's transactions must not follow it to the
        # application's project.
        self._client: Any = sentry_sdk.get_client()
        self._closed = False
        register_external_propagation_context(_current_otel_ids)
        self._deliveries = _Deliveries(drops)
        self._unhook = self._follow_transport()
        self_ref = weakref.ref(self)

        def after_fork_in_child() -> None:
            client = self_ref()
            if client is not None:
                client._reset_after_fork()

        os.register_at_fork(after_in_child=after_fork_in_child)

    @property
    def lost_transactions(self) -> int:
        """Transactions the transport gave up on (network error, queue overflow, rate limit).

        The envelope sink compares it across flushes to say whether everything arrived.
        """
        return self._deliveries.lost_count

    def _follow_transport(self) -> Callable[[], None] | None:
        """Hook the transport so each transaction is followed until it is sent or lost.

        sentry-sdk offers no hook for either outcome: its transport's own methods are wrapped
        on this one instance. Returns what undoes that, or None for a transport we cannot
        follow (an application's own kind, or the asynchronous one).
        """
        transport: Any = self._client.transport
        # SENTRY_PRINT_ENVELOPES puts a printer in front that hands everything to the real one.
        transport = getattr(transport, "_inner", transport)
        send = getattr(transport, "_send_envelope", None)
        lose = getattr(transport, "record_lost_event", None)
        drop = getattr(transport, "on_dropped_event", None)
        if send is None or lose is None or drop is None or inspect.iscoroutinefunction(send):
            return None

        deliveries = self._deliveries
        # The event id of the envelope being sent: the transport sends one at a time, on its
        # own thread, and says "status_429" without naming the envelope.
        sending: list[str | None] = [None]

        def send_envelope(envelope: Any) -> None:
            event_id = _transaction_id(envelope)
            sending[0] = event_id
            try:
                send(envelope)
            finally:
                sending[0] = None
                if event_id is not None:
                    deliveries.settled(event_id)

        def record_lost_event(
            reason: str, data_category: Any = None, item: Any = None, *, quantity: int = 1
        ) -> None:
            if item is not None and item.data_category == "transaction":
                event = item.get_transaction_event() or {}
                deliveries.lost(event.get("event_id"), f"transport_{reason}")
            lose(reason, data_category, item, quantity=quantity)

        def on_dropped_event(reason: str) -> None:
            # A 429 is Sentry refusing the envelope; the transport records no loss for it.
            if reason == "status_429" and sending[0] is not None:
                deliveries.lost(sending[0], "transport_status_429")
            drop(reason)

        hooks = {
            "_send_envelope": send_envelope,
            "record_lost_event": record_lost_event,
            "on_dropped_event": on_dropped_event,
        }
        saved = {name: transport.__dict__.get(name, _ABSENT) for name in hooks}
        for name, hook in hooks.items():
            setattr(transport, name, hook)

        def unhook() -> None:
            for name, hook in hooks.items():
                # Only our own layer: a hook installed on top of ours since is left alone.
                if transport.__dict__.get(name) is not hook:
                    continue
                if saved[name] is _ABSENT:
                    delattr(transport, name)
                else:
                    setattr(transport, name, saved[name])

        return unhook

    def _reset_after_fork(self) -> None:
        # The transactions in flight belong to the parent, which sends them. An owned client's
        # transport would send them a second time from the child (its queue is inherited, and
        # a new thread works it off), and its locks may have been held by a parent thread at
        # the moment of the fork: the child gets a worker of its own. Its connection pool too:
        # the inherited one holds copies of the parent's sockets (closing a copy here leaves
        # the parent's connection open) and a lock a parent thread may have held.
        self._deliveries.forget()
        if not self.owned:
            return
        transport: Any = self._client.transport
        transport = getattr(transport, "_inner", transport)
        try:
            if transport is not None and hasattr(transport, "_worker"):
                transport._worker = transport._create_worker(transport.options)
            inherited = getattr(transport, "_pool", None)
            if inherited is not None and hasattr(transport, "_make_pool"):
                transport._pool = transport._make_pool()
                _close_pooled_sockets(inherited)
        except Exception:
            internal_error(_log, "sentry transport after fork")

    def _before_send(self, event: dict[str, Any], hint: Any) -> dict[str, Any] | None:
        try:
            return scrub_event(event, self._scrubber)
        except Exception:
            # An event we cannot scrub is not sent: leaking is worse than losing it.
            _log.warning("agent-trace: dropped a Sentry event that could not be scrubbed")
            return None

    def _before_breadcrumb(self, crumb: dict[str, Any], hint: Any) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = _scrub_tree(crumb, self._scrubber)
            return result
        except Exception:
            return None

    def capture_exception(
        self,
        exc: BaseException,
        span: trace.Span,
        tags: Mapping[str, str],
        fingerprint: list[str] | None = None,
    ) -> None:
        """Send one error event linked to `span`, with `tags`."""
        with trace.use_span(span, end_on_exit=False), self._sdk.new_scope() as scope:
            scope.set_client(self._client)
            for key, value in tags.items():
                scope.set_tag(key, value)
            if fingerprint:
                scope.fingerprint = fingerprint
            if not self.owned:
                # A borrowed client keeps the application's own options (no before_send of
                # ours): the events agent-trace sends are scrubbed on this scope instead,
                # breadcrumbs included, since they are merged in before processors run.
                scope.add_event_processor(self._before_send)  # type: ignore[arg-type]
            scope.capture_exception(exc)

    def capture_event(self, event: dict[str, Any]) -> None:
        """Send one event agent-trace wrote itself (an alert) through agent-trace's client."""
        with self._sdk.new_scope() as scope:
            scope.set_client(self._client)
            if not self.owned:
                scope.add_event_processor(self._before_send)  # type: ignore[arg-type]
            # Built as a plain dict; sentry-sdk's `Event` TypedDict is the same JSON shape.
            scope.capture_event(event)  # type: ignore[arg-type]

    def transport(self) -> Any:
        """The transport the envelope sink hands transactions to; None once closed."""
        transport = None if self._closed else self._client.transport
        if transport is None or self._unhook is None:
            return transport
        return _FollowedTransport(transport, self._deliveries)

    def flush(self, timeout_s: float) -> bool:
        """Wait until Sentry answered every transaction handed over; False if one is left.

        A transaction the transport gave up on counts as answered here (it is counted as a
        drop when that happens): the envelope sink reports those through `lost_transactions`.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        if self._unhook is None:
            # TODO: a transport we cannot follow (asynchronous, or the application's own
            # kind) is trusted to deliver what it took: flush cannot tell it did not.
            self._client.flush(timeout=max(0.0, timeout_s))
            return True
        delivered = self._deliveries.wait(deadline)
        # Error events (violations, alerts) travel the same queue: they get the time left,
        # less a moment for the caller, which waits for this call no longer than its deadline.
        remaining = deadline - time.monotonic() - _ANSWER_MARGIN_S
        if delivered and remaining > 0:
            self._client.flush(timeout=remaining)
        return delivered

    def close(self, timeout_s: float) -> bool:
        """Flush, then close an owned client; False when transactions were left behind.

        Every transaction still in the transport at the deadline is counted as a drop
        (`shutdown_timeout`), once: if the transport loses it later, that is not counted again.
        """
        from sentry_sdk.scope import remove_external_propagation_context

        deadline = time.monotonic() + max(0.0, timeout_s)
        self._closed = True
        remove_external_propagation_context()
        delivered = self._deliveries.wait(deadline)
        if self.owned:
            # The transport's thread still works off its queue after this; it is a daemon.
            self._client.close(timeout=max(0.0, deadline - time.monotonic()))
            # Leave no closed client installed (the next configure() starts a fresh one), but
            # one the application installed since is the application's.
            scope = self._sdk.get_global_scope()
            if scope.client is self._client:
                scope.set_client(None)

        transactions, spans = self._deliveries.write_off()
        if self._unhook is not None:
            self._unhook()
        if transactions:
            warn_once(
                _log,
                "shutdown:sentry-transport",
                "agent-trace: shutdown gave up on Sentry (%s); %d spans in %d transactions "
                "were still in sentry-sdk's transport (see agent_trace.dropped_spans())",
                self.dsn.redacted,
                spans,
                transactions,
            )
        return delivered and transactions == 0


# Sentinel for an attribute that was not on the instance before we hooked it.
_ABSENT = object()

# How long before its deadline flush stops waiting for error events, so that it can still
# return its answer in time.
_ANSWER_MARGIN_S = 0.05


def _close_pooled_sockets(pool_manager: Any) -> None:
    """Close a forked child's copies of the idle sockets in an inherited urllib3 pool manager.

    Without taking urllib3's locks: a parent thread may have held any of them at the fork. A
    closed copy leaves the parent's connection open (only the parent's descriptor remains).
    """
    container = getattr(getattr(pool_manager, "pools", None), "_container", None) or {}
    for pool in list(container.values()):
        idle = getattr(getattr(pool, "pool", None), "queue", None) or ()
        for connection in list(idle):
            sock = getattr(connection, "sock", None)
            if sock is not None:
                sock.close()


def _transaction_id(envelope: Any) -> str | None:
    try:
        event = envelope.get_transaction_event()
    except Exception:
        return None
    event_id = event.get("event_id") if event is not None else None
    return event_id if isinstance(event_id, str) else None


class _Deliveries:
    """Transactions handed to sentry-sdk's transport that it has neither sent nor lost yet.

    The transport queues an envelope and posts it later on its own thread, and its flush
    returns nothing either way: each transaction is followed here by event id. Called on the
    envelope sink's export thread, the transport's thread and the flushing thread.
    """

    def __init__(self, drops: DropCounter) -> None:
        self._drops = drops
        self._cond = threading.Condition()
        # event id -> spans in the transaction (its root and its children)
        self._pending: dict[str, int] = {}
        self.lost_count = 0

    def handed_over(self, event_id: str, spans: int) -> None:
        with self._cond:
            self._pending[event_id] = spans

    def settled(self, event_id: str) -> None:
        with self._cond:
            if self._pending.pop(event_id, None) is not None:
                self._cond.notify_all()

    def lost(self, event_id: Any, reason: str) -> None:
        with self._cond:
            # Unknown ids are the application's own transactions, or ours already written off.
            spans = self._pending.pop(event_id, None) if isinstance(event_id, str) else None
            if spans is None:
                return
            self.lost_count += 1
            self._cond.notify_all()
        self._drops.add("sentry", reason, spans)

    def wait(self, deadline: float) -> bool:
        """Wait until every transaction pending now is sent or lost, or until `deadline`."""
        with self._cond:
            waiting_for = set(self._pending)
            while not waiting_for.isdisjoint(self._pending):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def write_off(self) -> tuple[int, int]:
        """Count every pending transaction's spans as dropped at shutdown; (transactions, spans)."""
        with self._cond:
            pending, self._pending = self._pending, {}
            self._cond.notify_all()
        spans = sum(pending.values())
        self._drops.add("sentry", SHUTDOWN_TIMEOUT, spans)
        return len(pending), spans

    def forget(self) -> None:
        # After a fork, in the child: a new condition, since a parent thread may have held it.
        self._cond = threading.Condition()
        self._pending = {}


class _FollowedTransport:
    """The transport as the envelope sink sees it: every transaction is followed from here."""

    def __init__(self, transport: Any, deliveries: _Deliveries) -> None:
        self._transport = transport
        self._deliveries = deliveries

    def capture_envelope(self, envelope: Any) -> None:
        event_id = _transaction_id(envelope)
        if event_id is not None:
            event = envelope.get_transaction_event() or {}
            self._deliveries.handed_over(event_id, 1 + len(event.get("spans") or ()))
        try:
            self._transport.capture_envelope(envelope)
        except Exception:
            # Not queued: the sink's worker counts the batch as failed, not this.
            if event_id is not None:
                self._deliveries.settled(event_id)
            raise

"""sentry-sdk set up beside our tracer provider, never in its place.

sentry-sdk is initialised without its own tracing, without its default integrations and with
our scrubber as `before_send`; instead of `OTLPIntegration` (which replaces the global
propagator and patches `Span.record_exception` for every span) we register a function that
hands Sentry the current OpenTelemetry ids, so error events link to the active span.

The client is kept, not looked up again, so an application that calls `sentry_sdk.init()`
for its own project later neither receives agent-trace's events nor loses its client at
agent-trace's shutdown. It carries the error events agent-trace sends (violations, failed
operations, alerts); transactions go through the envelope sink's own connection
(`sinks/sentry_envelope.py`), whose cost per transaction is a fraction of sentry-sdk's
transport's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from agent_trace._config import Settings
from agent_trace._fork import reset_in_forked_child
from agent_trace._log import internal_error
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

    def __init__(self, settings: Settings, scrubber: Scrubber) -> None:
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
        reset_in_forked_child(self, SentryClient._reset_after_fork)

    def _reset_after_fork(self) -> None:
        # The events in flight belong to the parent, which sends them. An owned client's
        # transport would send them a second time from the child (its queue is inherited, and
        # a new thread works it off), and its locks may have been held by a parent thread at
        # the moment of the fork: the child gets a worker of its own. Its connection pool too:
        # the inherited one holds copies of the parent's sockets (closing a copy here leaves
        # the parent's connection open) and a lock a parent thread may have held.
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

    def flush(self, timeout_s: float) -> None:
        """Give the error events in sentry-sdk's queue until `timeout_s` to go out."""
        self._client.flush(timeout=max(0.0, timeout_s))

    def close(self, timeout_s: float) -> None:
        """Flush the error events, then close an owned client."""
        from sentry_sdk.scope import remove_external_propagation_context

        self._closed = True
        remove_external_propagation_context()
        if self.owned:
            # The transport's thread still works off its queue after this; it is a daemon.
            self._client.close(timeout=max(0.0, timeout_s))
            # Leave no closed client installed (the next configure() starts a fresh one), but
            # one the application installed since is the application's.
            scope = self._sdk.get_global_scope()
            if scope.client is self._client:
                scope.set_client(None)


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

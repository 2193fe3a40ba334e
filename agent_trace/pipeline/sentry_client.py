"""sentry-sdk set up beside our tracer provider, never in its place.

sentry-sdk is initialised without its own tracing, without its default integrations and with
our scrubber as `before_send`; instead of `OTLPIntegration` (which replaces the global
propagator and patches `Span.record_exception` for every span) we register a function that
hands Sentry the current OpenTelemetry ids, so error events link to the active span.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from agent_trace._config import Settings
from agent_trace.pipeline.drops import DropCounter
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
        register_external_propagation_context(_current_otel_ids)
        # Transactions the transport gave up on (network error, queue overflow, rate limit):
        # the envelope sink compares it across flushes to say whether everything arrived.
        self.lost_transactions = 0
        self._install_loss_counter(drops)

    def _install_loss_counter(self, drops: DropCounter) -> None:
        """Count what sentry-sdk's transport loses (its queue overflows silently otherwise)."""
        transport = self._sdk.get_client().transport
        if transport is None:
            return
        original = transport.record_lost_event

        def record_lost_event(
            reason: str, data_category: Any = None, item: Any = None, *, quantity: int = 1
        ) -> None:
            category = item.data_category if item is not None else data_category
            if category == "transaction":
                spans = 1
                if item is not None:
                    event = item.get_transaction_event() or {}
                    spans += len(event.get("spans") or ())
                drops.add("sentry", f"transport_{reason}", spans)
                self.lost_transactions += 1
            original(reason, data_category, item, quantity=quantity)

        # Wrapped on this one transport instance: sentry-sdk offers no hook for lost events.
        transport.record_lost_event = record_lost_event  # type: ignore[method-assign]

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

    def transport(self) -> Any:
        return self._sdk.get_client().transport

    def flush(self, timeout_s: float) -> bool:
        """Wait for sentry-sdk's transport queue; False when it did not drain in time.

        sentry-sdk's flush returns nothing either way, but it returns as soon as its queue is
        empty: a flush that used the whole timeout left envelopes undelivered.
        """
        timeout_s = max(0.0, timeout_s)
        started = time.monotonic()
        self._sdk.get_client().flush(timeout=timeout_s)
        return time.monotonic() - started < timeout_s * 0.95

    def close(self, timeout_s: float) -> None:
        from sentry_sdk.scope import remove_external_propagation_context

        remove_external_propagation_context()
        if self.owned:
            client = self._sdk.get_client()
            client.close(timeout=max(0.0, timeout_s))
            # Leave no closed client installed: the next configure() starts a fresh one.
            self._sdk.get_global_scope().set_client(None)

"""Handoffs, conflict resolution and escalations to a human."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from agent_trace import _attributes as A
from agent_trace.model._scope import Scope, active_session, optional_tuple

__all__ = [
    "ConflictResolution",
    "Escalation",
    "Handoff",
    "MessageProcess",
    "MessageSend",
    "escalate",
    "handoff",
    "process_message",
    "resolve_conflict",
    "send_message",
]


class _OutcomeScope(Scope):
    _outcome_key = ""
    outcome: str | None = None

    def set_outcome(self, outcome: str) -> None:
        """Record how it ended."""
        self.outcome = outcome
        self.set_attribute(self._outcome_key, outcome)


class Handoff(Scope):
    """Span `handoff from {source} to {target}`."""

    _op = "gen_ai.handoff"

    def __init__(
        self, session: Any, source: str, target: str, *, reason: str | None = None, **attrs: Any
    ) -> None:
        converted = A.to_attributes(
            {
                A.OPERATION_NAME: "handoff",
                A.AGENT_NAME: source,
                A.HANDOFF + "source": source,
                A.HANDOFF + "target": target,
                A.HANDOFF + "reason": reason,
                **attrs,
            }
        )
        name = f"handoff from {A.name_text(source)} to {A.name_text(target)}"
        super().__init__(session, name, converted)


class ConflictResolution(_OutcomeScope):
    """Span `resolve_conflict {strategy}`."""

    _op = "agent_trace.conflict"
    _outcome_key = A.CONFLICT + "outcome"

    def __init__(self, session: Any, parties: Sequence[str], strategy: str, **attrs: Any) -> None:
        self.outcome: str | None = None
        converted = A.to_attributes(
            {
                A.CONFLICT + "parties": list(optional_tuple(parties)),
                A.CONFLICT + "strategy": strategy,
                **attrs,
            }
        )
        super().__init__(session, f"resolve_conflict {A.name_text(strategy)}", converted)


class Escalation(_OutcomeScope):
    """Span `escalate {trigger}`: the coordination asks a human."""

    _op = "agent_trace.escalation"
    _outcome_key = A.ESCALATION + "outcome"

    def __init__(
        self, session: Any, trigger: str, *, severity: str = "medium", **attrs: Any
    ) -> None:
        self.outcome: str | None = None
        converted = A.to_attributes(
            {A.ESCALATION + "trigger": trigger, A.ESCALATION + "severity": severity, **attrs}
        )
        super().__init__(session, f"escalate {A.name_text(trigger)}", converted)


def handoff(source: str, target: str, reason: str | None = None, **attrs: Any) -> Handoff:
    """A handoff in the current session, parented to the current span."""
    return Handoff(active_session(), source, target, reason=reason, **attrs)


def resolve_conflict(parties: Sequence[str], strategy: str, **attrs: Any) -> ConflictResolution:
    """A conflict resolution in the current session, parented to the current span."""
    return ConflictResolution(active_session(), parties, strategy, **attrs)


def escalate(trigger: str, severity: str = "medium", **attrs: Any) -> Escalation:
    """An escalation in the current session, parented to the current span."""
    return Escalation(active_session(), trigger, severity=severity, **attrs)


class MessageSend(Scope):
    """An agent sending a message: PRODUCER span `send {recipient}`.

    Pass `headers()` along with the message; the receiver's `process_message` links to it.
    """

    _op = "agent_trace.message"

    def __init__(
        self,
        session: Any,
        sender: str,
        recipient: str,
        *,
        message_type: str,
        message_id: str | None = None,
        content: Any = None,
        **attrs: Any,
    ) -> None:
        self._content = content
        converted = A.to_attributes(
            {
                "messaging.system": "agent_trace",
                "messaging.operation.type": "send",
                "messaging.destination.name": recipient,
                "messaging.message.id": message_id,
                A.AGENT_NAME: sender,
                A.MESSAGE + "type": message_type,
                A.MESSAGE + "sender": sender,
                A.MESSAGE + "recipient": recipient,
                **attrs,
            }
        )
        super().__init__(session, f"send {A.name_text(recipient)}", converted)
        self._kind = SpanKind.PRODUCER

    def _start(self) -> None:
        super()._start()
        pipeline = self._pipeline
        if self._content is not None and pipeline is not None and pipeline.capture_content:
            self.set_attribute(A.MESSAGE + "content", self._content)

    def headers(self) -> dict[str, str]:
        """W3C and Sentry trace headers naming this send, to travel with the message."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier


class MessageProcess(Scope):
    """An agent processing a received message: CONSUMER span `process {recipient}`, linked to
    the send (not parented on it: the receiver's own work stays in its own turn)."""

    _op = "agent_trace.message"

    def __init__(
        self,
        session: Any,
        recipient: str,
        message: Any = None,
        *,
        message_type: str | None = None,
        **attrs: Any,
    ) -> None:
        converted = A.to_attributes(
            {
                "messaging.system": "agent_trace",
                "messaging.operation.type": "process",
                "messaging.destination.name": recipient,
                A.AGENT_NAME: recipient,
                A.MESSAGE + "type": message_type,
                A.MESSAGE + "recipient": recipient,
                **attrs,
            }
        )
        super().__init__(session, f"process {A.name_text(recipient)}", converted)
        self._kind = SpanKind.CONSUMER
        try:
            self._links = _links_to(message)
        except Exception:
            # An unusable message (neither a send, a SpanContext nor headers) links to nothing.
            self._links = []


def _links_to(message: Any) -> list[trace.Link]:
    """A link to the sending span, from a MessageSend, a SpanContext or a headers mapping."""
    if message is None:
        return []
    if isinstance(message, MessageSend):
        ctx = message.span.get_span_context()
    elif isinstance(message, trace.SpanContext):
        ctx = message
    else:
        ctx = trace.get_current_span(propagate.extract(dict(message))).get_span_context()
    return [trace.Link(ctx)] if ctx.is_valid else []


def send_message(sender: str, recipient: str, *, message_type: str, **attrs: Any) -> MessageSend:
    """A message send in the current session, parented to the current span."""
    return MessageSend(active_session(), sender, recipient, message_type=message_type, **attrs)


def process_message(
    recipient: str, message: Any = None, *, message_type: str | None = None, **attrs: Any
) -> MessageProcess:
    """Processing a received message in the current session, linked to its send."""
    return MessageProcess(active_session(), recipient, message, message_type=message_type, **attrs)

"""Handoffs, conflict resolution and escalations to a human."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_trace import _attributes as A
from agent_trace.model._scope import Scope, active_session

__all__ = ["Handoff", "ConflictResolution", "Escalation", "handoff", "resolve_conflict", "escalate"]


class _OutcomeScope(Scope):
    _outcome_key = ""

    def set_outcome(self, outcome: str) -> None:
        """Record how it ended."""
        self.outcome = outcome
        self.set_attribute(self._outcome_key, outcome)


class Handoff(Scope):
    """Span `handoff from {source} to {target}`."""

    _op = "gen_ai.handoff"

    def __init__(self, session: Any, source: str, target: str, *, reason: str | None = None,
                 **attrs: Any) -> None:
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
        super().__init__(session, f"handoff from {source} to {target}", converted)


class ConflictResolution(_OutcomeScope):
    """Span `resolve_conflict {strategy}`."""

    _op = "agent_trace.conflict"
    _outcome_key = A.CONFLICT + "outcome"

    def __init__(self, session: Any, parties: Sequence[str], strategy: str, **attrs: Any) -> None:
        self.outcome: str | None = None
        converted = A.to_attributes(
            {A.CONFLICT + "parties": list(parties), A.CONFLICT + "strategy": strategy, **attrs}
        )
        super().__init__(session, f"resolve_conflict {strategy}", converted)


class Escalation(_OutcomeScope):
    """Span `escalate {trigger}`: the coordination asks a human."""

    _op = "agent_trace.escalation"
    _outcome_key = A.ESCALATION + "outcome"

    def __init__(self, session: Any, trigger: str, *, severity: str = "medium",
                 **attrs: Any) -> None:
        self.outcome: str | None = None
        converted = A.to_attributes(
            {A.ESCALATION + "trigger": trigger, A.ESCALATION + "severity": severity, **attrs}
        )
        super().__init__(session, f"escalate {trigger}", converted)


def handoff(source: str, target: str, reason: str | None = None, **attrs: Any) -> Handoff:
    """A handoff in the current session, parented to the current span."""
    return Handoff(active_session(), source, target, reason=reason, **attrs)


def resolve_conflict(parties: Sequence[str], strategy: str, **attrs: Any) -> ConflictResolution:
    """A conflict resolution in the current session, parented to the current span."""
    return ConflictResolution(active_session(), parties, strategy, **attrs)


def escalate(trigger: str, severity: str = "medium", **attrs: Any) -> Escalation:
    """An escalation in the current session, parented to the current span."""
    return Escalation(active_session(), trigger, severity=severity, **attrs)

"""agent-trace: multi-agent coordination as OpenTelemetry traces, for Jaeger, Sentry and files.

Example:
    >>> import agent_trace
    >>> agent_trace.configure("coordinator")
    >>> with agent_trace.session("ethical_review", agents=["ethics", "legal"]) as s:
    ...     with s.turn("ethics"):
    ...         ...
"""

from agent_trace._api import configure, dropped_spans, force_flush, settings, shutdown, sink_status
from agent_trace._config import ConfigurationError, Settings
from agent_trace._version import __version__
from agent_trace.alerts import AlertPolicy
from agent_trace.model.compliance import (
    ConstitutionalViolationError,
    PolicyCheck,
    policy_check,
    track_constitutional_compliance,
)
from agent_trace.model.consensus import (
    ConsensusRound,
    RoundResult,
    Voter,
    consensus_round,
    monitor_consensus,
)
from agent_trace.model.coordination import (
    ConflictResolution,
    Escalation,
    Handoff,
    MessageProcess,
    MessageSend,
    escalate,
    handoff,
    process_message,
    resolve_conflict,
    send_message,
)
from agent_trace.model.session import (
    Session,
    Turn,
    current_session,
    session,
    turn,
    with_current_context,
)
from agent_trace.model.targets import monitor_performance_target

__all__ = [
    "AlertPolicy",
    "ConfigurationError",
    "ConflictResolution",
    "ConsensusRound",
    "ConstitutionalViolationError",
    "Escalation",
    "Handoff",
    "MessageProcess",
    "MessageSend",
    "PolicyCheck",
    "RoundResult",
    "Session",
    "Settings",
    "Turn",
    "Voter",
    "__version__",
    "configure",
    "consensus_round",
    "current_session",
    "dropped_spans",
    "escalate",
    "force_flush",
    "handoff",
    "monitor_consensus",
    "monitor_performance_target",
    "policy_check",
    "process_message",
    "resolve_conflict",
    "send_message",
    "session",
    "settings",
    "shutdown",
    "sink_status",
    "track_constitutional_compliance",
    "turn",
    "with_current_context",
]

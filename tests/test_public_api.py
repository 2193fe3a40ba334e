"""The public face of `agent_trace`: one sorted `__all__` that changes only on purpose."""

from __future__ import annotations

import inspect

import agent_trace

# The contract (see the API notes). Adding or removing a public name means editing this list
# in the same change, so a drift of the export list never goes unnoticed.
EXPECTED_EXPORTS = [
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


def test_all_is_sorted() -> None:
    assert agent_trace.__all__ == sorted(agent_trace.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(agent_trace.__all__) == len(set(agent_trace.__all__))


def test_all_equals_the_expected_export_list() -> None:
    assert agent_trace.__all__ == EXPECTED_EXPORTS


def test_every_exported_name_resolves() -> None:
    missing = [name for name in agent_trace.__all__ if not hasattr(agent_trace, name)]
    assert missing == []


def test_no_public_name_is_left_out_of_all() -> None:
    # Modules imported as a side effect (model, pipeline...) are packages, not exports.
    public = {
        name
        for name, value in vars(agent_trace).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public <= set(agent_trace.__all__)


def test_every_exported_callable_has_a_docstring() -> None:
    undocumented = [
        name
        for name in agent_trace.__all__
        if callable(getattr(agent_trace, name)) and not inspect.getdoc(getattr(agent_trace, name))
    ]
    assert undocumented == []


def test_version_is_a_version_string() -> None:
    parts = agent_trace.__version__.split(".")
    assert len(parts) >= 2
    assert all(part.isdigit() for part in parts[:2])


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(agent_trace.ConfigurationError, ValueError)


def test_violation_error_is_an_exception_users_can_catch_broadly() -> None:
    assert issubclass(agent_trace.ConstitutionalViolationError, Exception)

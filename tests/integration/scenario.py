"""The reference coordination session the integration tests send to the real backends.

Three agents, two consensus rounds in which legal changes its vote, and one constitutional
violation raised inside a policy check and handled by the coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass

import agent_trace

AGENTS = ("ethics", "legal", "operations")
CONSTITUTION_HASH = "a1b2c3d4e5f60718"


@dataclass
class SessionIds:
    session_id: str
    trace_id: str
    violating_span_id: str


def run_reference_session(session_id: str) -> SessionIds:
    """Run the session through the public API and return the ids the tests look for."""
    with agent_trace.session(
        "ethical_review", session_id=session_id, agents=AGENTS, complexity=0.6
    ) as s:
        for agent in AGENTS:
            with s.turn(agent, role="reviewer"):
                pass
        first = {"ethics": "approve", "legal": "reject", "operations": "approve"}
        second = {"ethics": "approve", "legal": "approve", "operations": "approve"}
        for number, votes in enumerate((first, second), start=1):
            with s.consensus_round(
                "weighted_vote", participants=AGENTS, threshold=0.9, round=number
            ) as rnd:
                for agent, value in votes.items():
                    rnd.vote(agent, value, weight=1.0, confidence=0.8)
        violating = ""
        try:
            with s.policy_check("privacy") as check:
                violating = check.span_id
                raise agent_trace.ConstitutionalViolationError(
                    "proposal shares personal data without consent", "privacy", severity="high"
                )
        except agent_trace.ConstitutionalViolationError:
            s.set_outcome("blocked")
    return SessionIds(session_id, s.trace_id, violating)

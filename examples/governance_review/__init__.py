"""A governance board of three AI reviewers, traced with agent-trace: the main example.

Ethics, legal and operations reviewers judge proposals (deploy a model, share a dataset,
automate a decision...) against a constitution of numbered principles, vote over up to three
rounds, resolve conflicts, and escalate to a person when they cannot agree. Each proposal is one
traced session; `run()` reviews them all and returns a `Summary`.

Run it with `python -m examples.governance_review` (or `agent-trace demo`), then look at the
traces with `agent-trace report` and `agent-trace show --last`.

Where to look for each part of agent-trace's API:

- `coordinator.py`: `session`, `turn`, `policy_check` and `ConstitutionalViolationError`,
  `consensus_round` and `vote`, `@monitor_consensus`, `handoff`, `resolve_conflict`,
  `escalate`, `monitor_performance_target`;
- `agents.py`: `@track_constitutional_compliance` on the ethics reviewer's fairness check.

The rules themselves (`checks.py`, `agents.py`, `voting.py`, `human_review.py`) know nothing
about tracing beyond that one decorator, and run the same with tracing off.
"""

from __future__ import annotations

from .agents import AGENTS
from .constitution import DEFAULT_CONSTITUTION_PATH, Constitution, load_constitution
from .coordinator import OUTCOMES, AgentTimeoutError, ReviewResult, Summary, run
from .proposals import DEFAULT_PROPOSALS_PATH, Proposal, ProposalError, load_proposals

__all__ = [
    "AGENTS",
    "DEFAULT_CONSTITUTION_PATH",
    "DEFAULT_PROPOSALS_PATH",
    "OUTCOMES",
    "AgentTimeoutError",
    "Constitution",
    "Proposal",
    "ProposalError",
    "ReviewResult",
    "Summary",
    "load_constitution",
    "load_proposals",
    "run",
]

"""Ballots and the weighted vote that decides a round (pure logic, no tracing).

The rule: each reviewer's vote counts with its weight (1.5 in its own domain, 1.0 elsewhere).
A reviewer that abstains because a proposal is outside its competence defers to another
reviewer and hands it its weight. Abstentions aside, the side holding at least `THRESHOLD` of
the weight wins the round; otherwise there is no consensus and the board deliberates again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .checks import Finding

__all__ = [
    "HARD_PRINCIPLES",
    "THRESHOLD",
    "Ballot",
    "Tally",
    "effective_weights",
    "principle_precedence",
    "weighted_tally",
]

# Two reviewers of equal weight against one (2/3) are not enough; the domain expert plus one
# other against the third (2.5/3.5) are.
THRESHOLD = 0.7

# Principles whose breach is never traded against convenience or cost: an objection resting on
# one of them prevails when the reviewers stay deadlocked.
HARD_PRINCIPLES = frozenset({1, 2, 3, 7})


@dataclass(frozen=True)
class Ballot:
    """One reviewer's vote in one round.

    Attributes:
        agent: the reviewer.
        vote: `approve`, `reject` or `abstain`.
        weight: the reviewer's own weight (before deferrals).
        confidence: 0..1; how readily it changes its mind is documented in `agents.reconsider`.
        reasons: why, each citing principles as `P4 (Be fair)`.
        principles: the principle numbers the reasons cite.
        defer_to: for an abstention, the reviewer it hands its weight to.
        compute_s: time spent on the review's own work, simulated waits excluded.
        findings: violations found while reviewing (the fairness check).
        checks: how many constitutional checks the review ran.
    """

    agent: str
    vote: str
    weight: float
    confidence: float
    reasons: tuple[str, ...]
    principles: tuple[int, ...] = ()
    defer_to: str | None = None
    compute_s: float = 0.0
    findings: tuple[Finding, ...] = field(default=())
    checks: int = 0

    @property
    def rationale(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class Tally:
    """The result of a weighted vote, shaped the way `@agent_trace.monitor_consensus` reads it.

    `confidence` is the winning side's share of the weight; `votes` maps each reviewer to
    the value, effective weight and confidence it voted with; `ballots` are the ballots
    themselves, which the next round reconsiders.
    """

    consensus_achieved: bool
    decision: str | None
    confidence: float
    weight_for: float
    weight_against: float
    votes: Mapping[str, Mapping[str, Any]]
    ballots: Mapping[str, Ballot]


def effective_weights(ballots: Mapping[str, Ballot]) -> dict[str, float]:
    """Each reviewer's weight after deferrals: a deferring reviewer's weight moves to its target.

    Weight deferred to a reviewer that itself abstains is lost (nobody votes with it).
    """
    weights = {agent: ballot.weight for agent, ballot in ballots.items()}
    for agent, ballot in ballots.items():
        target = ballot.defer_to
        if ballot.vote != "abstain" or target is None or target not in ballots:
            continue
        if ballots[target].vote != "abstain":
            weights[target] += ballot.weight
            weights[agent] = 0.0
    return weights


def weighted_tally(ballots: Mapping[str, Ballot], threshold: float = THRESHOLD) -> Tally:
    """Decide a round: consensus when one side holds at least `threshold` of the weight."""
    weights = effective_weights(ballots)
    weight_for = sum(weights[a] for a, b in ballots.items() if b.vote == "approve")
    weight_against = sum(weights[a] for a, b in ballots.items() if b.vote == "reject")
    decided = weight_for + weight_against

    share = max(weight_for, weight_against) / decided if decided else 0.0
    achieved = decided > 0 and share >= threshold
    decision = None
    if achieved:
        decision = "approve" if weight_for >= weight_against else "reject"

    votes = {
        agent: {"value": b.vote, "weight": weights[agent], "confidence": b.confidence}
        for agent, b in ballots.items()
    }
    return Tally(achieved, decision, round(share, 4), weight_for, weight_against, votes, ballots)


def principle_precedence(ballots: Mapping[str, Ballot]) -> Ballot | None:
    """Resolve a deadlock: the strongest objection that rests on a hard principle, if any.

    Returns the rejecting ballot that prevails, or None when the disagreement is about
    something a person has to weigh (safety against cost, fairness against speed...).
    """
    objections = [
        b
        for b in ballots.values()
        if b.vote == "reject" and HARD_PRINCIPLES.intersection(b.principles)
    ]
    if not objections:
        return None
    return max(objections, key=lambda b: (b.confidence, b.agent))

"""The three reviewers: ethics, legal and operations, each a set of rules over the proposal.

Each reviewer collects concerns (points, the principle they rest on, a reason) and votes:

- `abstain` when the proposal is outside its competence; it then defers to the reviewer whose
  domain the proposal is in (the coordinator records that as a handoff);
- `reject` when its concerns add up to `REJECT_AT` points or more, else `approve`.

Confidence grows with the distance from that line: a rejection with 3 points is 0.6, with 6
or more 0.9 and above; a clean approval is 0.8, one with 2 points 0.6.

In rounds 2 and 3 a reviewer sees the previous round's ballots (`reconsider`): when the
reviewers voting the other way carry more weight than its own side, its confidence drops by
`CONCESSION_STEP`; once below 0.5 it changes its vote to theirs. So a 0.6 vote gives way in
round 2, a 0.7 or 0.8 vote in round 3, and a 0.9 vote holds to the end (a deadlock).
Abstentions stay abstentions: a reviewer that deferred keeps deferring.

Reviewers take a few milliseconds to "think" (an `asyncio.sleep` drawn from the session's
seeded random generator); the operations reviewer also waits for a capacity planner, one query
per region, which is what makes a rollout across very many regions exceed the turn timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

import agent_trace

from .checks import Finding, fairness
from .constitution import Constitution
from .proposals import Proposal, RolloutPlan
from .voting import Ballot, effective_weights

__all__ = [
    "AGENTS",
    "CONCESSION_STEP",
    "DOMAIN_OWNER",
    "PLANNER_S_PER_REGION",
    "REJECT_AT",
    "EthicsReviewer",
    "LegalReviewer",
    "OperationsReviewer",
    "Reviewer",
    "blast_radius",
    "reconsider",
    "reviewers",
]

AGENTS = ("ethics", "legal", "operations")

# Which reviewer a category belongs to: its vote weighs more there, and the others defer to it.
DOMAIN_OWNER = {
    "automated_decision": "ethics",
    "content_moderation": "ethics",
    "research": "ethics",
    "data_sharing": "legal",
    "policy_change": "legal",
    "vendor_contract": "legal",
    "infrastructure": "operations",
    "model_deployment": "operations",
    "process_automation": "operations",
}
DOMAIN_WEIGHT = 1.5
BASE_WEIGHT = 1.0

REJECT_AT = 3
CONCESSION_STEP = 0.2

THINK_MS = (1.0, 4.0)
PLANNER_S_PER_REGION = 0.004

# Countries whose data-protection law the EU recognises as adequate (plus the US framework):
# personal data of EU residents may go there; elsewhere a transfer needs counsel.
_ADEQUATE = frozenset({"EU", "UK", "CH", "JP", "KR", "CA", "NZ", "IL", "AR", "UY", "US"})

# The fraction of each region's hosts updated by the end of each wave, and the largest share
# of a region that one wave may update (the last wave of a pilot or canary rollout updates half).
MAX_WAVE_SHARE = 0.6
_WAVES = {
    "pilot": (0.02, 0.25, 0.5, 1.0),
    "canary": (0.01, 0.1, 0.5, 1.0),
    "staged": (0.1, 0.3, 0.6, 1.0),
    "big_bang": (1.0,),
    "none": (1.0,),
}


@dataclass(frozen=True)
class _Concern:
    points: int
    principle: int
    reason: str


class Reviewer:
    """A reviewer: rules in `assess`, the voting and latency shared by all three."""

    name = ""

    def __init__(self, constitution: Constitution) -> None:
        self.constitution = constitution

    def weight(self, proposal: Proposal) -> float:
        return DOMAIN_WEIGHT if DOMAIN_OWNER[proposal.category] == self.name else BASE_WEIGHT

    def relevant(self, proposal: Proposal) -> bool:
        """Whether the proposal touches this reviewer's competence at all."""
        raise NotImplementedError

    def assess(self, proposal: Proposal) -> tuple[list[_Concern], list[Finding], int]:
        """Concerns, violations found, and how many constitutional checks were run."""
        raise NotImplementedError

    async def review(self, proposal: Proposal, rng: random.Random) -> Ballot:
        """Round 1: an independent review of the proposal."""
        await _think(rng)
        started = time.perf_counter()
        ballot = self.decide(proposal)
        return replace(ballot, compute_s=time.perf_counter() - started)

    async def reconsider(
        self, own: Ballot, previous: Mapping[str, Ballot], round_number: int, rng: random.Random
    ) -> Ballot:
        """Rounds 2 and 3: look at the others' ballots and maybe change the vote."""
        await _think(rng)
        started = time.perf_counter()
        ballot = reconsider(own, previous, round_number)
        return replace(ballot, compute_s=time.perf_counter() - started, findings=(), checks=0)

    def decide(self, proposal: Proposal) -> Ballot:
        """The review without the waiting: rules to a ballot."""
        weight = self.weight(proposal)
        if not self.relevant(proposal):
            target = DOMAIN_OWNER[proposal.category]
            return Ballot(
                self.name,
                "abstain",
                weight,
                0.3,
                (f"outside {self.name}'s competence; defers to {target}",),
                defer_to=target,
            )

        concerns, findings, checks = self.assess(proposal)
        points = sum(c.points for c in concerns)
        principles = tuple(sorted({c.principle for c in concerns}))
        reasons = tuple(f"{c.reason} ({self.constitution.cite(c.principle)})" for c in concerns)
        if points >= REJECT_AT:
            confidence = min(0.95, 0.3 + 0.1 * points)
            vote = "reject"
        else:
            confidence = 0.8 - 0.1 * points
            vote = "approve"
            reasons = reasons or ("no concerns",)
        return Ballot(
            self.name,
            vote,
            weight,
            round(confidence, 2),
            reasons,
            principles,
            findings=tuple(findings),
            checks=checks,
        )


def reconsider(own: Ballot, previous: Mapping[str, Ballot], round_number: int) -> Ballot:
    """The documented rule by which a reviewer changes its vote after seeing the others'.

    When the reviewers voting the other way carry more (effective) weight than the side of
    `own`, its confidence drops by `CONCESSION_STEP`; below 0.5 it adopts their vote with
    confidence 0.5. Otherwise, and for abstentions, the ballot stands.
    """
    if own.vote == "abstain":
        return own

    weights = effective_weights(previous)
    opposing = [b for b in previous.values() if b.vote not in ("abstain", own.vote)]
    own_side = sum(weights[b.agent] for b in previous.values() if b.vote == own.vote)
    other_side = sum(weights[b.agent] for b in opposing)
    if other_side <= own_side:
        return own

    names = " and ".join(b.agent for b in opposing)
    eased = round(own.confidence - CONCESSION_STEP, 2)
    if eased >= 0.5:
        held = f"holds its vote after hearing {names} in round {round_number}"
        return replace(own, confidence=eased, reasons=(*own.reasons, held))
    return replace(
        own,
        vote=opposing[0].vote,
        confidence=0.5,
        reasons=(f"concedes to {names} in round {round_number}", *own.reasons),
        principles=(),
    )


class EthicsReviewer(Reviewer):
    """Harm, fairness, transparency and human oversight of decisions about people."""

    name = "ethics"

    def relevant(self, proposal: Proposal) -> bool:
        return (
            proposal.affects_people > 0
            or bool(proposal.personal_data)
            or DOMAIN_OWNER[proposal.category] == self.name
        )

    def assess(self, proposal: Proposal) -> tuple[list[_Concern], list[Finding], int]:
        concerns: list[_Concern] = []
        findings: list[Finding] = []
        checks = 0
        automated = proposal.automation_level in ("partial", "full")

        if automated and proposal.affects_people > 0:
            checks += 1
            verdict = _traced_fairness(proposal, self.constitution)
            if isinstance(verdict, Finding):
                findings.append(verdict)
                concerns.append(
                    _Concern(3, 4, "automated decisions about people, not tested for bias")
                )
        if proposal.personal_data and proposal.consent == "none":
            concerns.append(_Concern(2, 2, "uses personal data nobody consented to"))
        elif proposal.personal_data and proposal.consent == "implied":
            concerns.append(_Concern(1, 2, "relies on implied consent for personal data"))
        if proposal.special_data:
            kinds = ", ".join(sorted(proposal.special_data))
            concerns.append(_Concern(1, 3, f"handles {kinds} data"))
        if automated and proposal.affects_people > 0 and not proposal.notifies_affected:
            concerns.append(_Concern(1, 5, "people are not told a machine decides"))
        if (
            proposal.automation_level == "full"
            and proposal.affects_people >= 1000
            and not proposal.has_human_review
        ):
            concerns.append(
                _Concern(
                    2, 6, f"no person reviews decisions about {proposal.affects_people:,} people"
                )
            )
        if proposal.risk_level == "critical":
            concerns.append(_Concern(2, 1, "critical risk to the people affected"))
        elif proposal.risk_level == "high":
            concerns.append(_Concern(1, 1, "high risk to the people affected"))
        return concerns, findings, checks


@agent_trace.track_constitutional_compliance(policy="fairness")
def _traced_fairness(proposal: Proposal, constitution: Constitution) -> Finding | bool:
    # The decorator makes the call a `policy_check fairness` span under the ethics turn and
    # reads the verdict from the return value: True passes, a Finding (compliant=False) is a
    # violation with its type, severity and enforcement.
    return fairness(proposal, constitution) or True


class LegalReviewer(Reviewer):
    """Lawful basis, retention, transfers, contracts and jurisdictions."""

    name = "legal"

    def relevant(self, proposal: Proposal) -> bool:
        return (
            bool(proposal.personal_data)
            or proposal.third_party_sharing
            or len(proposal.jurisdiction) > 1
            or DOMAIN_OWNER[proposal.category] == self.name
        )

    def assess(self, proposal: Proposal) -> tuple[list[_Concern], list[Finding], int]:
        concerns: list[_Concern] = []
        personal = bool(proposal.personal_data)

        if personal and proposal.retention_days is not None and proposal.retention_days > 365:
            concerns.append(_Concern(2, 2, f"keeps personal data {proposal.retention_days} days"))
        if proposal.third_party_sharing and not proposal.security_review:
            concerns.append(
                _Concern(2, 11, "shares data with a third party before a security review")
            )
        outside = sorted(set(proposal.jurisdiction) - _ADEQUATE)
        if personal and "EU" in proposal.jurisdiction and outside:
            concerns.append(
                _Concern(
                    3,
                    7,
                    f"moves EU personal data to {', '.join(outside)} without an adequacy decision",
                )
            )
        if "children" in proposal.data_categories:
            concerns.append(_Concern(2, 3, "processes children's data"))
        if (
            proposal.automation_level == "full"
            and proposal.affects_people > 0
            and "EU" in proposal.jurisdiction
            and not proposal.has_human_review
        ):
            concerns.append(
                _Concern(
                    3,
                    6,
                    "solely automated decisions about EU residents without a right to human review",
                )
            )
        if proposal.owner is None:
            concerns.append(_Concern(1, 8, "no accountable owner"))
        if len(proposal.jurisdiction) >= 4:
            concerns.append(_Concern(1, 7, f"{len(proposal.jurisdiction)} jurisdictions to clear"))
        return concerns, [], 0


class OperationsReviewer(Reviewer):
    """Rollout safety, rollback, cost."""

    name = "operations"

    def relevant(self, proposal: Proposal) -> bool:
        plan = proposal.rollout_plan
        return (
            plan.strategy != "none"
            or plan.hosts > 0
            or DOMAIN_OWNER[proposal.category] == self.name
        )

    async def review(self, proposal: Proposal, rng: random.Random) -> Ballot:
        await _think(rng)
        if self.relevant(proposal):
            # The capacity planner answers one region at a time.
            await asyncio.sleep(PLANNER_S_PER_REGION * proposal.rollout_plan.regions)
        started = time.perf_counter()
        ballot = self.decide(proposal)
        return replace(ballot, compute_s=time.perf_counter() - started)

    def assess(self, proposal: Proposal) -> tuple[list[_Concern], list[Finding], int]:
        concerns: list[_Concern] = []
        plan = proposal.rollout_plan

        if plan.hosts > 100 and blast_radius(plan) > MAX_WAVE_SHARE:
            concerns.append(
                _Concern(
                    3,
                    9,
                    f"one wave updates most of a region's share of {plan.hosts:,} hosts at once",
                )
            )
        if plan.hosts > 0 and not plan.rollback:
            concerns.append(_Concern(2, 9, "no tested rollback"))
        if proposal.budget > 5_000_000:
            concerns.append(_Concern(3, 10, f"budget of {proposal.budget:,.0f} with no stop point"))
        elif proposal.budget > 2_000_000:
            concerns.append(_Concern(2, 10, f"budget of {proposal.budget:,.0f}"))
        if proposal.risk_level == "critical" and plan.strategy not in ("pilot", "canary"):
            concerns.append(_Concern(1, 9, "critical risk without a pilot or canary"))
        if plan.regions > 10 and plan.strategy not in ("staged", "canary"):
            concerns.append(_Concern(1, 9, f"{plan.regions} regions without stages"))
        return concerns, [], 0


def blast_radius(plan: RolloutPlan) -> float:
    """The largest share of one region's hosts that a single wave of the rollout updates.

    Built host by host, as the rollout would assign them, so its cost grows with the fleet:
    that is the operations reviewer's real compute, measured against the round's target.
    """
    if plan.hosts == 0 or plan.regions == 0:
        return 0.0
    waves = _WAVES[plan.strategy]
    size = Counter(host % plan.regions for host in range(plan.hosts))
    assigned = [0] * plan.regions
    per_wave = [[0] * plan.regions for _ in waves]
    for host in range(plan.hosts):
        region = host % plan.regions
        assigned[region] += 1
        done = assigned[region] / size[region]
        wave = 0
        while done > waves[wave] + 1e-9:
            wave += 1
        per_wave[wave][region] += 1
    return max(count / size[r] for wave in per_wave for r, count in enumerate(wave) if size[r])


async def _think(rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(*THINK_MS) / 1000)


def reviewers(constitution: Constitution) -> dict[str, Reviewer]:
    """One reviewer of each kind, keyed by name, in `AGENTS` order."""
    return {
        "ethics": EthicsReviewer(constitution),
        "legal": LegalReviewer(constitution),
        "operations": OperationsReviewer(constitution),
    }

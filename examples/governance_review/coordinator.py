"""The governance board: reviews every proposal in its own traced session, several at once.

One session, in order:

1. Screening: the constitutional checks of `checks.SCREENING`, each a `policy_check` span.
   A blocking finding raises `ConstitutionalViolationError` out of its check; the session
   catches it and ends `blocked`. A finding that asks for a person sends the proposal
   straight to human review.
2. Up to three rounds of weighted voting. In each, every reviewer takes a turn (concurrently,
   under a per-turn timeout) and the ballots are tallied. Round 1 is a plain function
   decorated with `@agent_trace.monitor_consensus`, which records the round and its votes
   from the tally it returns; rounds 2 and 3 use `session.consensus_round(...)` so they can
   carry their number and record each vote with its rationale.
3. Still no consensus: conflict resolution by principle precedence (an objection resting on a
   hard principle prevails), and failing that, escalation to the human review queue.

Every round is judged against `ROUND_COMPUTE_MS` of reviewer compute (simulated waits
excluded), and every session against `SESSION_BUDGET_MS` of wall time. An operations review
that outlasts `TURN_TIMEOUT_S` fails the session: `AgentTimeoutError` escapes the turn and the
session, whose spans end in error, and the board records the outcome `failed`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import agent_trace

from .agents import AGENTS, reviewers
from .checks import SCREENING, Finding
from .constitution import Constitution, load_constitution
from .human_review import HumanReviewQueue
from .proposals import Proposal, load_proposals
from .voting import THRESHOLD, Ballot, Tally, principle_precedence, weighted_tally

__all__ = [
    "MAX_ROUNDS",
    "OUTCOMES",
    "ROUND_COMPUTE_MS",
    "SESSION_BUDGET_MS",
    "TURN_TIMEOUT_S",
    "AgentTimeoutError",
    "ReviewResult",
    "Summary",
    "run",
]

_log = logging.getLogger(__name__)

MAX_ROUNDS = 3
TURN_TIMEOUT_S = 0.15
ROUND_COMPUTE_MS = 5.0
SESSION_BUDGET_MS = 200.0

# How a session can end (`agent_trace.session.outcome`).
OUTCOMES = ("approved", "rejected", "blocked", "escalated", "failed")


class AgentTimeoutError(Exception):
    """A reviewer did not answer within its turn's timeout."""

    # Read by agent-trace as the span's `error.type`, instead of the class's qualified name.
    error_type = "agent_timeout"

    def __init__(self, agent: str, timeout_s: float) -> None:
        super().__init__(f"{agent} did not answer within {timeout_s * 1000:.0f} ms")
        self.agent = agent
        self.timeout_s = timeout_s


@dataclass
class ReviewResult:
    """What happened to one proposal; filled in as its session goes."""

    proposal_id: str
    outcome: str = "pending"
    decided_by: str = ""
    rounds: int = 0
    human_decision: str | None = None
    checks: int = 0
    checks_passed: int = 0
    violations: list[Finding] = field(default_factory=list)
    handoffs: int = 0
    escalations: int = 0
    timed_out_agent: str | None = None
    breaches: list[str] = field(default_factory=list)
    trace_id: str = ""


@dataclass
class Summary:
    """The board's figures for one run."""

    sessions: int
    outcomes: Counter[str]
    approved_by_round: Counter[int]
    checks: int
    compliance_rate: float
    violations: Counter[str]
    escalations: int
    timeouts: int
    targets_breached: Counter[str]
    duration_s: float
    results: list[ReviewResult]

    @classmethod
    def of(cls, results: list[ReviewResult], duration_s: float) -> Summary:
        checks = sum(r.checks for r in results)
        passed = sum(r.checks_passed for r in results)
        return cls(
            sessions=len(results),
            outcomes=Counter(r.outcome for r in results),
            approved_by_round=Counter(
                r.rounds for r in results if r.outcome == "approved" and r.decided_by == "consensus"
            ),
            checks=checks,
            compliance_rate=passed / checks if checks else 1.0,
            violations=Counter(v.violation_type for r in results for v in r.violations),
            escalations=sum(r.escalations for r in results),
            timeouts=sum(r.timed_out_agent is not None for r in results),
            targets_breached=Counter(b for r in results for b in r.breaches),
            duration_s=duration_s,
            results=results,
        )

    def format(self) -> str:
        """A few lines for a terminal."""
        outcomes = []
        for outcome in OUTCOMES:
            text = f"{outcome} {self.outcomes[outcome]}"
            if outcome == "approved" and self.approved_by_round:
                rounds = ", ".join(
                    f"round {n}: {self.approved_by_round[n]}"
                    for n in sorted(self.approved_by_round)
                )
                text += f" ({rounds})"
            outcomes.append(text)
        violations = ", ".join(f"{kind} {n}" for kind, n in self.violations.most_common())
        breaches = ", ".join(f"{name} {n}" for name, n in sorted(self.targets_breached.items()))
        return "\n".join(
            [
                f"{self.sessions} governance reviews in {self.duration_s:.2f} s",
                f"  outcomes:    {', '.join(outcomes)}",
                f"  compliance:  {self.compliance_rate:.1%} of {self.checks} constitutional "
                f"checks passed",
                f"  violations:  {violations or 'none'}",
                f"  escalations: {self.escalations} to a human; agent timeouts: {self.timeouts}",
                f"  targets:     {breaches or 'all met'}",
            ]
        )


async def run(
    proposals_path: str | Path | None = None,
    *,
    concurrency: int = 8,
    seed: int = 7,
    constitution_path: str | Path | None = None,
) -> Summary:
    """Review every proposal, `concurrency` sessions at a time, traced if agent-trace is set up.

    Args:
        proposals_path: the proposals JSON; the bundled 40+ proposals when None.
        concurrency: how many sessions run at once.
        seed: seeds the reviewers' latencies (outcomes follow from the rules alone).
        constitution_path: the constitution; the bundled one when None.

    Raises:
        ValueError: a malformed proposals or constitution file, or a constitution whose hash
            is not the one agent-trace was configured with.

    Example:
        >>> agent_trace.configure("governance-review", constitution_hash=load_constitution().hash)
        >>> summary = asyncio.run(run())
        >>> print(summary.format())
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")

    settings = agent_trace.settings()
    configured_hash = settings.constitution_hash if settings is not None else None
    constitution = load_constitution(constitution_path, expected_hash=configured_hash)
    if settings is not None and configured_hash is None:
        _log.warning(
            "agent-trace has no constitutional hash configured, so the traces will not say "
            "which constitution judged them; pass configure(constitution_hash=%r)",
            constitution.hash,
        )
    proposals = load_proposals(proposals_path)

    started = time.perf_counter()
    queue = HumanReviewQueue()
    async with queue.reviewer():
        board = _Board(constitution, seed, concurrency, queue)
        results = await asyncio.gather(*(board.review(p) for p in proposals))
    return Summary.of(list(results), time.perf_counter() - started)


class _Board:
    """Runs the sessions; one per run, shared by its sessions."""

    def __init__(
        self, constitution: Constitution, seed: int, concurrency: int, queue: HumanReviewQueue
    ) -> None:
        self.constitution = constitution
        self.seed = seed
        self.reviewers = reviewers(constitution)
        self.human_review = queue
        self._slots = asyncio.Semaphore(concurrency)

    async def review(self, proposal: Proposal) -> ReviewResult:
        """One proposal, start to end; never raises for an outcome the board expects."""
        result = ReviewResult(proposal.id)
        async with self._slots:
            try:
                await self._session(proposal, result)
            except AgentTimeoutError as exc:
                # The session span already ended in error; the board moves on to the next one.
                result.outcome, result.decided_by = "failed", "timeout"
                result.timed_out_agent = exc.agent
        return result

    async def _session(self, proposal: Proposal, result: ReviewResult) -> None:
        # One generator per reviewer and session: latencies do not depend on how concurrent
        # sessions interleave, so a seed always gives the same run.
        rngs = {agent: random.Random(f"{self.seed}/{proposal.id}/{agent}") for agent in AGENTS}

        async with agent_trace.session(
            "governance_review",
            session_id=proposal.id,
            agents=AGENTS,
            complexity=proposal.complexity,
            category=proposal.category,
            risk_level=proposal.risk_level,
        ) as session:
            result.trace_id = session.trace_id
            started = time.perf_counter()
            try:
                await self._deliberate(session, proposal, rngs, result)
            except agent_trace.ConstitutionalViolationError:
                # Refusing a proposal is the screening doing its job: the session handles it and
                # stays OK; the check span the violation escaped records it as an error.
                result.outcome, result.decided_by = "blocked", "constitution"
            except AgentTimeoutError:
                session.set_outcome("failed")
                raise
            session.set_outcome(result.outcome)

            elapsed_ms = (time.perf_counter() - started) * 1000
            if not agent_trace.monitor_performance_target(
                "session_duration", SESSION_BUDGET_MS, elapsed_ms, unit="ms"
            ):
                result.breaches.append("session_duration")

    async def _deliberate(
        self,
        session: agent_trace.Session,
        proposal: Proposal,
        rngs: Mapping[str, random.Random],
        result: ReviewResult,
    ) -> None:
        needs_person = self._screen(session, proposal, result)
        if needs_person is not None:
            await self._escalate(session, proposal, result, "constitutional_review", "high")
            return

        tally = await self._first_round(AGENTS, session, proposal, rngs, result)
        number = 1
        while not tally.consensus_achieved and number < MAX_ROUNDS:
            number += 1
            tally = await self._next_round(number, session, tally.ballots, rngs, result)
        result.rounds = number

        if tally.consensus_achieved:
            result.outcome = "approved" if tally.decision == "approve" else "rejected"
            result.decided_by = "consensus"
            return

        parties = [agent for agent, b in tally.ballots.items() if b.vote != "abstain"]
        with session.resolve_conflict(parties=parties, strategy="principle_precedence") as conflict:
            prevailing = principle_precedence(tally.ballots)
            conflict.set_outcome(f"{prevailing.agent}_prevails" if prevailing else "unresolved")
        if prevailing is not None:
            result.outcome, result.decided_by = "rejected", "principle_precedence"
            return
        await self._escalate(session, proposal, result, "deadlock", "medium")

    def _screen(
        self, session: agent_trace.Session, proposal: Proposal, result: ReviewResult
    ) -> Finding | None:
        """Run the screening checks; returns a finding that wants a person, if any."""
        wants_person: Finding | None = None
        for policy, rule in SCREENING:
            with session.policy_check(policy) as check:
                result.checks += 1
                finding = rule(proposal, self.constitution)
                if finding is None:
                    check.passed()
                    result.checks_passed += 1
                    continue

                result.violations.append(finding)
                if finding.enforcement == "block":
                    raise agent_trace.ConstitutionalViolationError(
                        finding.message,
                        finding.violation_type,
                        finding.severity,
                        policy=policy,
                        principle=finding.principle,
                    )
                check.violation(
                    finding.violation_type,
                    finding.severity,
                    enforcement=finding.enforcement,
                    principle=finding.principle,
                )
                if finding.enforcement == "escalate" and wants_person is None:
                    wants_person = finding
        return wants_person

    # Round 1: the decorator opens the `consensus_round weighted_vote` span around the call
    # (the turns inside become its children), numbers it from the `round` argument, and
    # records the returned tally's votes.
    @agent_trace.monitor_consensus("weighted_vote", threshold=THRESHOLD)
    async def _first_round(
        self,
        participants: Sequence[str],
        session: agent_trace.Session,
        proposal: Proposal,
        rngs: Mapping[str, random.Random],
        result: ReviewResult,
        round: int = 1,
    ) -> Tally:
        ballots = await self._turns(
            session,
            result,
            round,
            {
                agent: functools.partial(self.reviewers[agent].review, proposal, rngs[agent])
                for agent in participants
            },
        )
        for ballot in ballots.values():
            result.checks += ballot.checks
            result.checks_passed += ballot.checks - len(ballot.findings)
            result.violations.extend(ballot.findings)
        self._judge_compute(ballots, result)
        return weighted_tally(ballots)

    async def _next_round(
        self,
        number: int,
        session: agent_trace.Session,
        previous: Mapping[str, Ballot],
        rngs: Mapping[str, random.Random],
        result: ReviewResult,
    ) -> Tally:
        async with session.consensus_round(
            "weighted_vote", participants=AGENTS, threshold=THRESHOLD, round=number
        ) as rnd:
            ballots = await self._turns(
                session,
                result,
                number,
                {
                    agent: functools.partial(
                        self.reviewers[agent].reconsider,
                        previous[agent],
                        previous,
                        number,
                        rngs[agent],
                    )
                    for agent in AGENTS
                },
            )
            self._judge_compute(ballots, result)
            tally = weighted_tally(ballots)
            for agent, vote in tally.votes.items():
                rnd.vote(
                    agent,
                    vote["value"],
                    weight=vote["weight"],
                    confidence=vote["confidence"],
                    rationale=ballots[agent].rationale,
                )
            rnd.conclude(
                "consensus" if tally.consensus_achieved else "no_consensus",
                decision=tally.decision,
            )
        return tally

    async def _turns(
        self,
        session: agent_trace.Session,
        result: ReviewResult,
        number: int,
        work: Mapping[str, Callable[[], Awaitable[Ballot]]],
    ) -> dict[str, Ballot]:
        """Every reviewer's turn, concurrently; the first failure is raised once all are done."""
        done = await asyncio.gather(
            *(self._turn(session, result, number, a, start) for a, start in work.items()),
            return_exceptions=True,
        )
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return {ballot.agent: ballot for ballot in done if isinstance(ballot, Ballot)}

    async def _turn(
        self,
        session: agent_trace.Session,
        result: ReviewResult,
        number: int,
        agent: str,
        start: Callable[[], Awaitable[Ballot]],
    ) -> Ballot:
        async with session.turn(agent, role="reviewer") as turn:
            turn.set_attribute("agent_trace.review.round", number)
            try:
                ballot = await asyncio.wait_for(start(), TURN_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise AgentTimeoutError(agent, TURN_TIMEOUT_S) from None
            turn.set_attributes(
                {
                    "agent_trace.review.vote": ballot.vote,
                    "agent_trace.review.confidence": ballot.confidence,
                    "agent_trace.review.principles": list(ballot.principles),
                    "agent_trace.review.compute_ms": round(ballot.compute_s * 1000, 3),
                }
            )
            # A reviewer outside its competence hands the proposal to the one whose domain it
            # is; its weight goes with it (see voting.effective_weights).
            if number == 1 and ballot.defer_to is not None:
                with session.handoff(agent, ballot.defer_to, reason="outside its competence"):
                    result.handoffs += 1
        return ballot

    def _judge_compute(self, ballots: Mapping[str, Ballot], result: ReviewResult) -> None:
        # Called inside the round, so the target lands on the round's span.
        compute_ms = sum(b.compute_s for b in ballots.values()) * 1000
        if not agent_trace.monitor_performance_target(
            "round_compute", ROUND_COMPUTE_MS, compute_ms, unit="ms"
        ):
            result.breaches.append("round_compute")

    async def _escalate(
        self,
        session: agent_trace.Session,
        proposal: Proposal,
        result: ReviewResult,
        trigger: str,
        severity: str,
    ) -> None:
        result.escalations += 1
        async with session.escalate(trigger, severity=severity) as escalation:
            decision = await self.human_review.submit(proposal)
            escalation.set_outcome(f"human_{decision}d")
        result.outcome, result.decided_by = "escalated", "human"
        result.human_decision = decision

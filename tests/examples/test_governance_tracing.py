"""The governance example as traced: one span tree per proposal, matching what the board decided.

Uses agent-trace's own testing kit (`agent_trace.testing.capture_spans`), so these tests read
exactly the spans the real sinks would receive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from agent_trace.testing import CapturedSpans, capture_spans
from examples.governance_review import (
    AGENTS,
    ReviewResult,
    Summary,
    load_constitution,
    load_proposals,
    run,
)
from examples.governance_review.checks import SCREENING
from tests.examples._support import run_board

HASH = load_constitution().hash


class Traced:
    def __init__(self, spans: CapturedSpans, summary: Summary) -> None:
        self.spans = spans
        self.summary = summary

    def session(self, result: ReviewResult) -> ReadableSpan:
        return self.spans.session(result.proposal_id)

    def where(self, predicate: object) -> list[tuple[ReviewResult, ReadableSpan]]:
        return [(r, self.session(r)) for r in self.summary.results if predicate(r)]  # type: ignore[operator]

    def rounds(self, session: ReadableSpan) -> list[ReadableSpan]:
        return sorted(self.spans.rounds(session), key=lambda s: s.start_time or 0)

    def named(self, session: ReadableSpan, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans.descendants(session) if s.name.startswith(prefix)]


@pytest.fixture(scope="module")
def traced() -> Iterator[Traced]:
    with capture_spans("governance-review-test", constitution_hash=HASH) as spans:
        summary = run_board()
        yield Traced(spans, summary)


def attr(span: ReadableSpan, key: str) -> object:
    return (span.attributes or {}).get(key)


# -- sessions -------------------------------------------------------------------------------------


def test_one_session_span_per_proposal_named_by_its_id(traced: Traced) -> None:
    sessions = traced.spans.sessions()

    assert len(sessions) == len(load_proposals())
    assert {s.name for s in sessions} == {"invoke_workflow governance_review"}
    assert sorted(str(attr(s, "gen_ai.conversation.id")) for s in sessions) == sorted(
        p.id for p in load_proposals()
    )
    # Each session is its own trace.
    assert len({s.context.trace_id for s in sessions if s.context}) == len(sessions)


def test_each_session_records_the_boards_outcome_and_its_trace_id(traced: Traced) -> None:
    for result, session in traced.where(lambda r: True):
        assert attr(session, "agent_trace.session.outcome") == result.outcome
        assert session.context is not None
        assert f"{session.context.trace_id:032x}" == result.trace_id
        assert list(attr(session, "agent_trace.session.agents")) == list(AGENTS)  # type: ignore[call-overload]


def test_every_span_carries_the_constitution_hash_and_has_its_parent(traced: Traced) -> None:
    assert {attr(s, "agent_trace.constitution.hash") for s in traced.spans.spans} == {HASH}
    traced.spans.assert_no_orphans()


# -- rounds and votes, by outcome ------------------------------------------------------------


def test_consensus_outcomes_have_one_round_per_round_taken_with_every_vote(traced: Traced) -> None:
    decided = traced.where(lambda r: r.decided_by == "consensus")
    assert {r.rounds for r, _ in decided} == {1, 2, 3}

    for result, session in decided:
        rounds = traced.rounds(session)
        assert len(rounds) == result.rounds, traced.spans.tree(session)
        for number, rnd in enumerate(rounds, 1):
            votes = traced.spans.votes(rnd)
            assert sorted(v.name for v in votes) == sorted(f"vote {a}" for a in AGENTS)
            last = number == result.rounds
            assert attr(rnd, "agent_trace.consensus.outcome") == (
                "consensus" if last else "no_consensus"
            )
        expected = "approve" if result.outcome == "approved" else "reject"
        assert attr(rounds[-1], "agent_trace.consensus.decision") == expected


def test_every_round_is_numbered(traced: Traced) -> None:
    for result, session in traced.where(lambda r: r.rounds == 3):
        numbers = [attr(r, "agent_trace.consensus.round") for r in traced.rounds(session)]
        # Round 1 is numbered by @monitor_consensus from the function's `round` argument.
        assert numbers == [1, 2, 3], result.proposal_id


def test_a_deadlock_is_resolved_by_precedence_or_escalated_to_a_person(traced: Traced) -> None:
    deadlocked = traced.where(lambda r: r.rounds == 3 and r.decided_by != "consensus")
    assert {r.decided_by for r, _ in deadlocked} == {"principle_precedence", "human"}

    for result, session in deadlocked:
        assert all(
            attr(r, "agent_trace.consensus.outcome") == "no_consensus"
            for r in traced.rounds(session)
        )
        (conflict,) = traced.named(session, "resolve_conflict ")
        assert conflict.name == "resolve_conflict principle_precedence"
        outcome = str(attr(conflict, "agent_trace.conflict.outcome"))
        escalations = traced.named(session, "escalate ")
        if result.decided_by == "human":
            assert outcome == "unresolved"
            assert [e.name for e in escalations] == ["escalate deadlock"]
        else:
            assert outcome.endswith("_prevails")
            assert escalations == []


def test_escalations_record_the_persons_decision(traced: Traced) -> None:
    escalated = traced.where(lambda r: r.outcome == "escalated")
    assert escalated

    for result, session in escalated:
        (escalation,) = traced.named(session, "escalate ")
        assert (
            attr(escalation, "agent_trace.escalation.outcome") == f"human_{result.human_decision}d"
        )
        if result.rounds == 0:
            assert escalation.name == "escalate constitutional_review"
            assert traced.rounds(session) == []


def test_blocked_sessions_hold_no_rounds_and_stay_ok(traced: Traced) -> None:
    blocked = traced.where(lambda r: r.outcome == "blocked")
    assert blocked

    for _, session in blocked:
        assert traced.rounds(session) == []
        assert traced.spans.turns(session) == []
        assert session.status.status_code is StatusCode.UNSET


def test_a_timeout_fails_the_turn_round_and_session_and_records_no_votes(traced: Traced) -> None:
    failed = traced.where(lambda r: r.outcome == "failed")
    assert failed

    for result, session in failed:
        assert session.status.status_code is StatusCode.ERROR
        assert attr(session, "error.type") == "agent_timeout"
        # The round that timed out is the last; on a loaded machine a turn of a later round than
        # the planned one can be the first to run out of time, after rounds that ended well.
        *earlier, rnd = traced.rounds(session)
        assert all(r.status.status_code is StatusCode.UNSET for r in earlier)
        assert rnd.status.status_code is StatusCode.ERROR
        assert traced.spans.votes(rnd) == []
        turns = [
            t
            for t in traced.spans.turns(session)
            if attr(t, "agent_trace.review.round") == len(earlier) + 1
        ]
        by_agent = {str(attr(t, "gen_ai.agent.name")): t for t in turns}
        timed_out = by_agent.pop(str(result.timed_out_agent))
        assert timed_out.status.status_code is StatusCode.ERROR
        assert attr(timed_out, "error.type") == "agent_timeout"
        assert all(t.status.status_code is StatusCode.UNSET for t in by_agent.values())


def test_only_sessions_that_failed_are_errors(traced: Traced) -> None:
    errors = {
        str(attr(s, "gen_ai.conversation.id"))
        for s in traced.spans.sessions()
        if s.status.status_code is StatusCode.ERROR
    }

    assert errors == {r.proposal_id for r in traced.summary.results if r.outcome == "failed"}


# -- constitutional checks ------------------------------------------------------------------------


def checks(traced: Traced) -> list[ReadableSpan]:
    return traced.spans.find(prefix="policy_check ")


def test_a_violation_is_an_error_only_where_it_escapes(traced: Traced) -> None:
    violations = [
        c for c in checks(traced) if attr(c, "agent_trace.compliance.result") == "violation"
    ]
    escaped = [c for c in violations if c.status.status_code is StatusCode.ERROR]
    recorded = [c for c in violations if c.status.status_code is StatusCode.UNSET]

    assert len(escaped) == traced.summary.outcomes["blocked"]
    for check in escaped:
        assert attr(check, "error.type") == "constitutional_violation"
        assert attr(check, "agent_trace.compliance.enforcement") == "block"
        assert [e.name for e in check.events] == ["exception"]
    assert recorded
    assert {attr(c, "agent_trace.compliance.enforcement") for c in recorded} == {"warn", "escalate"}
    assert len(escaped) + len(recorded) == sum(traced.summary.violations.values())


def test_screening_runs_in_order_until_a_blocking_finding(traced: Traced) -> None:
    order = [f"policy_check {policy}" for policy, _ in SCREENING]

    for result, session in traced.where(lambda r: True):
        screening = [c.name for c in traced.spans.children(session, prefix="policy_check ")]
        if result.outcome == "blocked":
            assert screening == order[: len(screening)]
        else:
            assert screening == order


def test_the_fairness_check_runs_inside_the_ethics_turn(traced: Traced) -> None:
    fairness = traced.spans.find("policy_check fairness")

    assert fairness
    for check in fairness:
        parent = traced.spans.parent(check)
        assert parent is not None
        assert parent.name == "invoke_agent ethics"


def test_check_counts_and_violations_match_the_summary_metrics(traced: Traced) -> None:
    metrics = traced.spans.metrics()
    checked = sum(value for _, value in metrics["agent_trace.compliance.checks"])
    passed = sum(
        value
        for labels, value in metrics["agent_trace.compliance.checks"]
        if labels["result"] == "compliant"
    )
    by_type: Counter[str] = Counter()
    for labels, value in metrics["agent_trace.violations"]:
        by_type[labels["violation_type"]] += value

    assert checked == len(checks(traced)) == traced.summary.checks
    assert passed / checked == pytest.approx(traced.summary.compliance_rate)
    assert by_type == traced.summary.violations


# -- turns, handoffs, targets ---------------------------------------------------------------------


def test_every_vote_was_cast_after_a_turn_of_the_same_agent_in_its_round(traced: Traced) -> None:
    for rnd in traced.spans.find(prefix="consensus_round "):
        turns = {
            attr(t, "gen_ai.agent.name") for t in traced.spans.children(rnd, prefix="invoke_agent ")
        }
        votes = {attr(v, "gen_ai.agent.name") for v in traced.spans.votes(rnd)}
        assert votes <= turns


def test_a_deferring_agent_hands_off_inside_its_turn(traced: Traced) -> None:
    handoffs = traced.spans.find(prefix="handoff from ")

    assert len(handoffs) == sum(r.handoffs for r in traced.summary.results) > 0
    for handoff in handoffs:
        turn = traced.spans.parent(handoff)
        assert turn is not None
        source = attr(handoff, "agent_trace.handoff.source")
        assert turn.name == f"invoke_agent {source}"
        assert attr(turn, "agent_trace.review.vote") == "abstain"


def test_every_round_is_judged_against_the_compute_target(traced: Traced) -> None:
    for rnd in traced.spans.find(prefix="consensus_round "):
        if rnd.status.status_code is StatusCode.ERROR:
            continue  # a round that timed out never got to be judged
        assert attr(rnd, "agent_trace.target.name") == "round_compute"
        assert attr(rnd, "agent_trace.target.threshold") == 5.0
        assert isinstance(attr(rnd, "agent_trace.target.met"), bool)


def test_breaches_counted_in_metrics_match_the_summary(traced: Traced) -> None:
    counted: Counter[str] = Counter()
    for labels, value in traced.spans.metrics().get("agent_trace.target.breaches", []):
        counted[labels["target"]] += value

    assert counted == traced.summary.targets_breached
    breached = [s for s in traced.spans.spans if attr(s, "agent_trace.target.met") is False]
    assert len(breached) == sum(traced.summary.targets_breached.values())
    # A missed target is data, never an error status.
    assert all(s.status.status_code is StatusCode.UNSET for s in breached)


def test_votes_of_round_one_carry_the_weights_after_deferral(traced: Traced) -> None:
    deferred = [r for r in traced.summary.results if r.handoffs and r.rounds >= 1]
    assert deferred

    for result in deferred:
        first = traced.rounds(traced.session(result))[0]
        weights = {
            attr(v, "gen_ai.agent.name"): attr(v, "agent_trace.vote.weight")
            for v in traced.spans.votes(first)
        }
        abstained = [
            attr(v, "gen_ai.agent.name")
            for v in traced.spans.votes(first)
            if attr(v, "agent_trace.vote.value") == "abstain"
        ]
        assert abstained
        assert all(weights[agent] == 0.0 for agent in abstained), weights
        assert sum(weights.values()) == pytest.approx(3.5)  # 1.5 + 1.0 + 1.0, moved, not lost


# -- a configured hash that is not the file's -----------------------------------------------------


async def test_run_refuses_a_constitution_that_does_not_match_the_configured_hash() -> None:
    with capture_spans(constitution_hash="0123456789abcdef") as spans:
        with pytest.raises(ValueError, match="0123456789abcdef"):
            await run()

        assert spans.sessions() == []

"""The governance example end to end, without tracing: outcomes, determinism, the summary."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from examples.governance_review import (
    DEFAULT_PROPOSALS_PATH,
    OUTCOMES,
    ReviewResult,
    Summary,
    load_constitution,
    load_proposals,
    run,
)
from examples.governance_review.agents import PLANNER_S_PER_REGION
from examples.governance_review.checks import SCREENING
from examples.governance_review.coordinator import TURN_TIMEOUT_S
from tests.examples._support import paused_gc, run_board

SEVEN_OUTCOMES = {
    "approved in round 1",
    "approved in round 2",
    "approved in round 3",
    "rejected",
    "blocked",
    "escalated",
    "failed",
}


def kind(result: ReviewResult) -> str:
    if result.outcome == "approved":
        return f"approved in round {result.rounds}"
    return result.outcome


def decisions(summary: Summary) -> list[tuple[str, str, int, str, str | None]]:
    return [
        (r.proposal_id, r.outcome, r.rounds, r.decided_by, r.human_decision)
        for r in summary.results
    ]


@pytest.fixture(scope="module")
def summary() -> Summary:
    """One run with the defaults, shared by the tests that only read it."""
    return run_board()


def test_every_outcome_occurs_with_the_default_seed(summary: Summary) -> None:
    kinds = Counter(kind(r) for r in summary.results)

    assert set(kinds) == SEVEN_OUTCOMES, kinds


async def test_the_same_seed_gives_the_same_outcomes(summary: Summary) -> None:
    with paused_gc():
        again = await run(seed=7)

    assert decisions(again) == decisions(summary)


async def test_outcomes_follow_the_rules_whatever_the_seed_or_concurrency(summary: Summary) -> None:
    with paused_gc():
        other = await run(seed=12345, concurrency=3)

    assert decisions(other) == decisions(summary)


def test_summary_figures_add_up_from_the_results(summary: Summary) -> None:
    results = summary.results
    checks = sum(r.checks for r in results)

    assert summary.sessions == len(results) == len(load_proposals())
    assert sum(summary.outcomes.values()) == summary.sessions
    assert set(summary.outcomes) <= set(OUTCOMES)
    assert summary.checks == checks
    assert summary.compliance_rate == pytest.approx(sum(r.checks_passed for r in results) / checks)
    assert 0 < summary.compliance_rate < 1
    assert summary.violations == Counter(v.violation_type for r in results for v in r.violations)
    assert summary.timeouts == summary.outcomes["failed"]
    assert summary.escalations == summary.outcomes["escalated"]
    assert sum(summary.approved_by_round.values()) == summary.outcomes["approved"]


def test_format_gives_each_outcome_and_the_compliance_rate(summary: Summary) -> None:
    text = summary.format()

    for outcome in OUTCOMES:
        assert f"{outcome} {summary.outcomes[outcome]}" in text
    assert f"{summary.compliance_rate:.1%}" in text
    for n, count in summary.approved_by_round.items():
        assert f"round {n}: {count}" in text


def test_a_blocked_proposal_stops_at_its_first_blocking_finding(summary: Summary) -> None:
    blocked = [r for r in summary.results if r.outcome == "blocked"]

    assert blocked
    for result in blocked:
        assert result.violations[-1].enforcement == "block"
        assert result.rounds == 0
        assert result.checks <= len(SCREENING)
    others = [r for r in summary.results if r.outcome != "blocked"]
    assert all(v.enforcement != "block" for r in others for v in r.violations)


def test_escalations_end_with_the_persons_decision(summary: Summary) -> None:
    escalated = [r for r in summary.results if r.outcome == "escalated"]

    assert {r.human_decision for r in escalated} == {"approve", "reject"}
    # Both routes to a person occur: the constitution's, and a deadlock of the reviewers.
    assert {r.rounds for r in escalated} == {0, 3}


def test_timeouts_are_operations_reviews_of_rollouts_across_too_many_regions(
    summary: Summary,
) -> None:
    proposals = {p.id: p for p in load_proposals()}
    failed = [r for r in summary.results if r.outcome == "failed"]

    assert failed
    for result in failed:
        assert result.timed_out_agent == "operations"
        regions = proposals[result.proposal_id].rollout_plan.regions
        assert regions * PLANNER_S_PER_REGION > TURN_TIMEOUT_S
    slow = [
        p.id
        for p in proposals.values()
        if p.rollout_plan.regions * PLANNER_S_PER_REGION > TURN_TIMEOUT_S
    ]
    assert sorted(r.proposal_id for r in failed) == sorted(slow)


def test_a_deadlock_on_a_hard_principle_is_rejected_by_conflict_resolution(
    summary: Summary,
) -> None:
    resolved = [r for r in summary.results if r.decided_by == "principle_precedence"]

    assert resolved
    assert all(r.outcome == "rejected" and r.rounds == 3 for r in resolved)


async def test_another_proposals_file_can_be_reviewed(tmp_path: Path) -> None:
    entries = json.loads(DEFAULT_PROPOSALS_PATH.read_text(encoding="utf-8"))[:3]
    path = tmp_path / "three.json"
    path.write_text(json.dumps(entries), encoding="utf-8")

    small = await run(path)

    assert [r.proposal_id for r in small.results] == [e["id"] for e in entries]


async def test_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        await run(concurrency=0)


async def test_a_malformed_constitution_is_refused_before_any_review(tmp_path: Path) -> None:
    broken = tmp_path / "constitution.txt"
    broken.write_text("nothing numbered\n", encoding="utf-8")

    with pytest.raises(ValueError, match="no numbered principles"):
        await run(constitution_path=broken)
    assert load_constitution().hash  # the bundled one is untouched

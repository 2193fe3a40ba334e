"""The governance example's rules, without tracing: checks, reviewers, the vote, the human."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from examples.governance_review import Proposal, load_constitution, load_proposals
from examples.governance_review.agents import (
    PLANNER_S_PER_REGION,
    EthicsReviewer,
    LegalReviewer,
    OperationsReviewer,
    blast_radius,
    reconsider,
)
from examples.governance_review.checks import (
    SCREENING,
    fairness,
    human_oversight,
    mentions,
    privacy,
)
from examples.governance_review.coordinator import TURN_TIMEOUT_S
from examples.governance_review.human_review import HumanReviewQueue, human_decision
from examples.governance_review.voting import (
    THRESHOLD,
    Ballot,
    effective_weights,
    principle_precedence,
    weighted_tally,
)

CONSTITUTION = load_constitution()


def clean() -> Proposal:
    """A bundled proposal that every check passes and every reviewer approves."""
    return next(p for p in load_proposals() if p.title.startswith("Support assistant drafts"))


def ballot(
    agent: str,
    vote: str,
    weight: float = 1.0,
    confidence: float = 0.8,
    principles: tuple[int, ...] = (),
    defer_to: str | None = None,
) -> Ballot:
    return Ballot(agent, vote, weight, confidence, ("because",), principles, defer_to)


# -- the baseline ------------------------------------------------------------------------------


def test_the_clean_proposal_passes_every_screening_check_and_every_reviewer() -> None:
    proposal = clean()

    assert [rule(proposal, CONSTITUTION) for _, rule in SCREENING] == [None] * len(SCREENING)
    for reviewer in (EthicsReviewer, LegalReviewer, OperationsReviewer):
        assert reviewer(CONSTITUTION).decide(proposal).vote == "approve"


# -- constitutional checks ----------------------------------------------------------------------


def test_sharing_personal_data_without_consent_is_blocked_by_the_privacy_check() -> None:
    shared = replace(clean(), third_party_sharing=True, consent="implied")

    finding = privacy(shared, CONSTITUTION)

    assert finding is not None
    assert (finding.violation_type, finding.enforcement, finding.principle) == (
        "personal_data_without_consent",
        "block",
        2,
    )
    assert privacy(replace(shared, consent="explicit"), CONSTITUTION) is None


def test_sharing_health_data_without_consent_is_a_critical_special_category_violation() -> None:
    shared = replace(clean(), third_party_sharing=True, consent="none", data_categories=("health",))

    finding = privacy(shared, CONSTITUTION)

    assert finding is not None
    assert (finding.violation_type, finding.severity, finding.principle) == (
        "special_category_data",
        "critical",
        3,
    )


def test_fully_automated_high_risk_decisions_without_review_go_to_a_person() -> None:
    automated = replace(clean(), automation_level="full", risk_level="high", has_human_review=False)

    finding = human_oversight(automated, CONSTITUTION)

    assert finding is not None
    assert finding.enforcement == "escalate"
    assert human_oversight(replace(automated, risk_level="medium"), CONSTITUTION) is None
    assert human_oversight(replace(automated, has_human_review=True), CONSTITUTION) is None


def test_keyword_rules_match_word_stems_and_need_every_significant_word() -> None:
    assert mentions("They predict criminal records.", "predicting the criminality")
    assert mentions("A social scoring scheme", "social scoring")
    assert not mentions("social scores for posts", "social scoring")
    assert not mentions("covert operations", "covert surveillance")


# -- reviewers ----------------------------------------------------------------------------------


def test_ethics_rejects_untested_automated_decisions_about_people_citing_fairness() -> None:
    automated = replace(clean(), automation_level="partial", bias_tested=False)

    verdict = EthicsReviewer(CONSTITUTION).decide(automated)

    assert verdict.vote == "reject"
    assert 4 in verdict.principles
    assert "P4 (Be fair)" in verdict.rationale
    assert [f.violation_type for f in verdict.findings] == ["untested_bias"]
    assert EthicsReviewer(CONSTITUTION).decide(replace(automated, bias_tested=True)).vote == (
        "approve"
    )


def test_ethics_rejects_personal_data_used_without_any_consent() -> None:
    unconsented = replace(clean(), consent="none", risk_level="high")

    verdict = EthicsReviewer(CONSTITUTION).decide(unconsented)

    assert verdict.vote == "reject"
    assert 2 in verdict.principles


def test_legal_rejects_eu_personal_data_moved_to_a_country_without_adequacy() -> None:
    transfer = replace(clean(), jurisdiction=("EU", "PH"))

    verdict = LegalReviewer(CONSTITUTION).decide(transfer)

    assert verdict.vote == "reject"
    assert 7 in verdict.principles
    assert LegalReviewer(CONSTITUTION).decide(
        replace(transfer, jurisdiction=("EU", "JP"))
    ).vote == ("approve")


def test_operations_rejects_a_big_bang_rollout_without_a_way_back() -> None:
    plan = replace(clean().rollout_plan, strategy="big_bang", hosts=500, rollback=False)

    verdict = OperationsReviewer(CONSTITUTION).decide(replace(clean(), rollout_plan=plan))

    assert verdict.vote == "reject"
    assert verdict.principles == (9,)


def test_blast_radius_is_the_largest_share_of_a_region_one_wave_updates() -> None:
    plan = clean().rollout_plan

    assert blast_radius(replace(plan, strategy="big_bang", hosts=400, regions=4)) == 1.0
    assert blast_radius(replace(plan, strategy="staged", hosts=400, regions=4)) == pytest.approx(
        0.4
    )
    assert blast_radius(replace(plan, strategy="canary", hosts=400, regions=4)) == pytest.approx(
        0.5
    )
    assert blast_radius(replace(plan, hosts=0)) == 0.0


def test_a_reviewer_outside_its_competence_abstains_and_defers_to_the_domain_owner() -> None:
    infrastructure = next(p for p in load_proposals() if p.title.startswith("Upgrade the primary"))

    verdict = EthicsReviewer(CONSTITUTION).decide(infrastructure)

    assert (verdict.vote, verdict.defer_to) == ("abstain", "operations")


def test_domain_owner_votes_with_more_weight() -> None:
    proposal = clean()  # process automation: operations' domain

    assert OperationsReviewer(CONSTITUTION).decide(proposal).weight == 1.5
    assert LegalReviewer(CONSTITUTION).decide(proposal).weight == 1.0


async def test_operations_review_of_a_rollout_across_many_regions_outlasts_the_turn_timeout() -> (
    None
):
    regions = int(TURN_TIMEOUT_S / PLANNER_S_PER_REGION) + 10
    plan = replace(clean().rollout_plan, regions=regions)
    huge = replace(clean(), rollout_plan=plan)
    reviewer = OperationsReviewer(CONSTITUTION)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reviewer.review(huge, random.Random(1)), TURN_TIMEOUT_S)

    finished = await asyncio.wait_for(reviewer.review(clean(), random.Random(1)), TURN_TIMEOUT_S)
    assert finished.vote == "approve"


async def test_review_latency_follows_the_seed_but_the_vote_does_not() -> None:
    reviewer = EthicsReviewer(CONSTITUTION)

    first = await reviewer.review(clean(), random.Random(3))
    again = await reviewer.review(clean(), random.Random(3))

    assert first.vote == again.vote == "approve"
    assert random.Random(3).random() == random.Random(3).random()
    assert first.compute_s > 0


# -- the vote -----------------------------------------------------------------------------------


def test_two_equal_votes_against_one_are_not_consensus() -> None:
    tally = weighted_tally(
        {
            a: b
            for a, b in (
                ("e", ballot("e", "approve")),
                ("l", ballot("l", "approve")),
                ("o", ballot("o", "reject")),
            )
        }
    )

    assert tally.confidence == pytest.approx(2 / 3, abs=1e-4)
    assert tally.confidence < THRESHOLD
    assert not tally.consensus_achieved
    assert tally.decision is None


def test_the_domain_owner_and_one_other_carry_the_round() -> None:
    tally = weighted_tally(
        {
            "e": ballot("e", "reject"),
            "l": ballot("l", "approve"),
            "o": ballot("o", "approve", weight=1.5),
        }
    )

    assert tally.consensus_achieved
    assert tally.decision == "approve"
    assert tally.confidence == pytest.approx(2.5 / 3.5, abs=1e-4)


def test_a_deferring_reviewer_hands_its_weight_to_the_one_it_defers_to() -> None:
    ballots = {
        "e": ballot("e", "abstain", defer_to="o"),
        "l": ballot("l", "reject"),
        "o": ballot("o", "approve"),
    }

    assert effective_weights(ballots) == {"e": 0.0, "l": 1.0, "o": 2.0}
    assert not weighted_tally(ballots).consensus_achieved  # 2 against 1 is still 2/3
    ballots["o"] = ballot("o", "approve", weight=1.5)
    assert weighted_tally(ballots).decision == "approve"  # 2.5 against 1


def test_no_votes_but_abstentions_is_no_consensus() -> None:
    tally = weighted_tally({"e": ballot("e", "abstain"), "l": ballot("l", "abstain")})

    assert not tally.consensus_achieved


# -- reconsidering in rounds 2 and 3 ----------------------------------------------------------


def outvoted(confidence: float) -> tuple[Ballot, dict[str, Ballot]]:
    own = ballot("o", "reject", weight=1.5, confidence=confidence, principles=(9,))
    return own, {"e": ballot("e", "approve"), "l": ballot("l", "approve"), "o": own}


@pytest.mark.parametrize(
    ("confidence", "gives_way_in"), [(0.6, 2), (0.7, 3), (0.8, 3), (0.9, None)]
)
def test_an_outweighed_reviewer_gives_way_in_the_round_its_confidence_allows(
    confidence: float, gives_way_in: int | None
) -> None:
    own, previous = outvoted(confidence)
    gave_way = None
    for number in (2, 3):
        own = reconsider(own, previous, number)
        previous = {**previous, "o": own}
        if own.vote == "approve" and gave_way is None:
            gave_way = number

    assert gave_way == gives_way_in


def test_the_heavier_side_does_not_reconsider() -> None:
    own = ballot("e", "approve", confidence=0.6)
    previous = {"e": own, "l": ballot("l", "approve"), "o": ballot("o", "reject", weight=1.5)}

    assert reconsider(own, previous, 2) == own


def test_an_abstention_stays_an_abstention() -> None:
    own = ballot("e", "abstain", defer_to="o")
    previous = {"e": own, "l": ballot("l", "reject"), "o": ballot("o", "reject")}

    assert reconsider(own, previous, 2) == own


# -- deadlocks and people ------------------------------------------------------------------------


def test_a_deadlock_goes_to_the_objection_resting_on_a_hard_principle() -> None:
    legal = ballot("l", "reject", weight=1.5, confidence=0.95, principles=(2, 7))
    ballots = {"e": ballot("e", "approve"), "l": legal, "o": ballot("o", "approve")}

    assert principle_precedence(ballots) == legal
    ballots["l"] = replace(legal, principles=(9, 10))
    assert principle_precedence(ballots) is None


def test_the_human_reviewer_approves_only_owned_non_critical_transparent_proposals() -> None:
    proposal = clean()

    assert human_decision(proposal) == "approve"
    assert human_decision(replace(proposal, owner=None)) == "reject"
    assert human_decision(replace(proposal, risk_level="critical")) == "reject"
    assert human_decision(replace(proposal, notifies_affected=False)) == "reject"
    assert human_decision(replace(proposal, notifies_affected=False, affects_people=0)) == (
        "approve"
    )


async def test_the_human_review_queue_answers_in_order_while_its_reviewer_works() -> None:
    queue = HumanReviewQueue(review_s=0.001)
    owned, unowned = clean(), replace(clean(), owner=None)

    async with queue.reviewer():
        answers = await asyncio.gather(queue.submit(owned), queue.submit(unowned))

    assert answers == ["approve", "reject"]
    assert queue.reviewed == 2


def test_fairness_is_not_judged_for_proposals_that_decide_nothing_about_people() -> None:
    assert (
        fairness(replace(clean(), automation_level="none", bias_tested=False), CONSTITUTION) is None
    )

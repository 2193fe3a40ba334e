"""Consensus rounds, votes and `@monitor_consensus`."""

# Nested `with` blocks here mirror the span tree under test; merging them would hide it.
# ruff: noqa: SIM117

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

import agent_trace
from agent_trace import _log
from agent_trace.testing import CapturedSpans, capture_spans

HASH = "cdd01ef066bc6cf2"
AGENTS = ["ethics", "legal", "ops"]


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans(constitution_hash=HASH) as captured:
        yield captured


def test_round_records_tally_agreement_and_outcome(spans: CapturedSpans) -> None:
    with agent_trace.session("review", session_id="s") as s:
        with s.consensus_round("weighted_vote", participants=AGENTS, threshold=0.66, round=1) as r:
            r.vote("ethics", "approve", weight=2.0, confidence=0.9)
            r.vote("legal", "reject", weight=1.0, confidence=0.6)
            r.vote("ops", "abstain")
            result = r.conclude()

    assert result == agent_trace.RoundResult(
        outcome="consensus",
        decision="approve",
        agreement=pytest.approx(2 / 3, abs=1e-6),
        votes_for=1,
        votes_against=1,
        votes_abstain=1,
    )
    assert result.consensus_achieved
    rnd = spans.one("consensus_round weighted_vote")
    assert spans.parent(rnd) is spans.one("invoke_workflow review")
    attrs = rnd.attributes or {}
    assert attrs["agent_trace.constitution.hash"] == HASH
    assert attrs["gen_ai.conversation.id"] == "s"
    assert attrs["sentry.op"] == "agent_trace.consensus.round"
    assert attrs["agent_trace.consensus.algorithm"] == "weighted_vote"
    assert attrs["agent_trace.consensus.round"] == 1
    assert attrs["agent_trace.consensus.threshold"] == 0.66
    assert attrs["agent_trace.consensus.quorum"] == 2
    assert list(attrs["agent_trace.consensus.participants"]) == AGENTS  # type: ignore[arg-type]
    assert attrs["agent_trace.consensus.votes.for"] == 1
    assert attrs["agent_trace.consensus.votes.against"] == 1
    assert attrs["agent_trace.consensus.votes.abstain"] == 1
    assert attrs["agent_trace.consensus.agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert attrs["agent_trace.consensus.outcome"] == "consensus"
    assert rnd.status.status_code is StatusCode.UNSET


def test_votes_are_child_spans_of_the_round(spans: CapturedSpans) -> None:
    with agent_trace.session("review", session_id="s") as s:
        with s.consensus_round("weighted_vote", participants=AGENTS) as r:
            r.vote("ethics", "approve", weight=2.0, confidence=0.9)
            with r.voter("legal") as v:
                v.cast("reject", weight=1.5, confidence=0.4)

    rnd = spans.one("consensus_round weighted_vote")
    votes = {v.name: v for v in spans.votes(rnd)}
    assert set(votes) == {"vote ethics", "vote legal"}
    ethics, legal = votes["vote ethics"].attributes, votes["vote legal"].attributes
    assert ethics["gen_ai.agent.name"] == "ethics"
    assert ethics["agent_trace.vote.value"] == "approve"
    assert ethics["agent_trace.vote.weight"] == 2.0
    assert ethics["agent_trace.vote.confidence"] == 0.9
    assert legal["gen_ai.agent.name"] == "legal"
    assert legal["agent_trace.vote.value"] == "reject"
    assert legal["agent_trace.vote.weight"] == 1.5
    for vote in votes.values():
        assert vote.attributes["sentry.op"] == "agent_trace.vote"
        assert vote.attributes["gen_ai.conversation.id"] == "s"
        assert vote.attributes["agent_trace.constitution.hash"] == HASH
    assert r.votes == {"ethics": ("approve", 2.0), "legal": ("reject", 1.5)}


async def test_async_round_with_a_timed_voter(spans: CapturedSpans) -> None:
    async with agent_trace.session("review") as s:
        async with s.consensus_round("majority", participants=["a", "b"]) as r:
            async with r.voter("a") as v:
                v.cast("approve")
            r.vote("b", "approve")

    rnd = spans.one("consensus_round majority")
    assert rnd.attributes["agent_trace.consensus.outcome"] == "consensus"
    assert {v.name for v in spans.votes(rnd)} == {"vote a", "vote b"}


def test_round_concludes_itself_on_exit(spans: CapturedSpans) -> None:
    with (
        agent_trace.session("review") as s,
        s.consensus_round("majority", participants=AGENTS) as r,
    ):
        r.vote("ethics", "reject")
        r.vote("legal", "reject")

    assert r.result is not None and r.result.decision == "reject"
    attrs = spans.one("consensus_round majority").attributes
    assert attrs["agent_trace.consensus.outcome"] == "consensus"
    assert attrs["agent_trace.consensus.votes.against"] == 2


def test_split_vote_below_threshold_is_no_consensus(spans: CapturedSpans) -> None:
    with (
        agent_trace.session("review") as s,
        s.consensus_round("weighted_vote", participants=["a", "b"], threshold=0.66) as r,
    ):
        r.vote("a", "approve")
        r.vote("b", "reject")

    assert r.result is not None
    assert r.result.outcome == "no_consensus"
    assert r.result.agreement == 0.5
    rnd = spans.one("consensus_round weighted_vote")
    # Failing to agree is an outcome, not an error of the round.
    assert rnd.status.status_code is StatusCode.UNSET


def test_too_few_votes_is_no_quorum(spans: CapturedSpans) -> None:
    with (
        agent_trace.session("review") as s,
        s.consensus_round("majority", participants=AGENTS) as r,
    ):
        r.vote("ethics", "approve")

    assert r.result is not None and r.result.outcome == "no_quorum"


def test_a_vote_changed_within_a_round_counts_once(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s, s.consensus_round("majority", participants=["a"]) as r:
        r.vote("a", "reject")
        r.vote("a", "approve")

    attrs = spans.one("consensus_round majority").attributes
    assert attrs["agent_trace.consensus.votes.for"] == 1
    assert attrs["agent_trace.consensus.votes.against"] == 0
    assert len(spans.find("vote a")) == 2  # both casts are in the trace


def test_a_vote_changing_between_rounds_is_tallied_per_round(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("weighted_vote", participants=AGENTS, threshold=0.66, round=1) as r1:
            r1.vote("ethics", "approve")
            r1.vote("legal", "reject")
            r1.vote("ops", "reject")
        with s.consensus_round("weighted_vote", participants=AGENTS, threshold=0.66, round=2) as r2:
            r2.vote("ethics", "approve")
            r2.vote("legal", "approve")  # persuaded between the rounds
            r2.vote("ops", "approve")

    rounds = sorted(
        spans.find("consensus_round weighted_vote"),
        key=lambda span: span.attributes["agent_trace.consensus.round"],
    )
    first, second = (r.attributes for r in rounds)
    assert (
        first["agent_trace.consensus.votes.for"],
        first["agent_trace.consensus.votes.against"],
    ) == (1, 2)
    assert first["agent_trace.consensus.outcome"] == "consensus"
    assert first["agent_trace.consensus.decision"] == "reject"
    assert (
        second["agent_trace.consensus.votes.for"],
        second["agent_trace.consensus.votes.against"],
    ) == (3, 0)
    assert second["agent_trace.consensus.decision"] == "approve"
    legal_votes = [
        (
            spans.parent(v).attributes["agent_trace.consensus.round"],
            v.attributes["agent_trace.vote.value"],
        )
        for v in spans.find("vote legal")
    ]
    assert sorted(legal_votes) == [(1, "reject"), (2, "approve")]


def test_round_metrics_count_rounds_by_outcome(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("majority", participants=["a"]) as r:
            r.vote("a", "approve")
        with s.consensus_round("majority", participants=["a"]):
            pass

    metrics = spans.metrics()
    assert sorted(metrics["agent_trace.consensus.rounds"], key=repr) == sorted(
        [
            ({"algorithm": "majority", "outcome": "consensus"}, 1),
            ({"algorithm": "majority", "outcome": "no_quorum"}, 1),
        ],
        key=repr,
    )


# -- @monitor_consensus ---------------------------------------------------------------------


@dataclass
class ConsensusResult:
    consensus_achieved: bool
    confidence: float
    votes: dict[str, Any] = field(default_factory=dict)


RESULT_OBJECT = ConsensusResult(
    consensus_achieved=True,
    confidence=0.8,
    votes={"ethics": "approve", "legal": {"value": "approve", "weight": 2.0, "confidence": 0.7}},
)
RESULT_DICT = {
    "consensus_achieved": False,
    "confidence": 0.4,
    "votes": [{"agent": "ethics", "value": "approve"}, {"agent": "ops", "value": "reject"}],
}


@agent_trace.monitor_consensus("weighted_vote")
def build_consensus_sync(participants: list[str], proposal: str, result: Any) -> Any:
    return result


@agent_trace.monitor_consensus("weighted_vote")
async def build_consensus_async(participants: list[str], proposal: str, result: Any) -> Any:
    return result


async def call(is_async: bool, *args: Any) -> Any:
    if is_async:
        return await build_consensus_async(*args)
    return build_consensus_sync(*args)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_monitor_consensus_reads_a_result_object(
    spans: CapturedSpans, is_async: bool
) -> None:
    with agent_trace.session("review", session_id="s"):
        returned = await call(is_async, AGENTS, "proposal", RESULT_OBJECT)

    assert returned is RESULT_OBJECT
    rnd = spans.one("consensus_round weighted_vote")
    assert spans.parent(rnd) is spans.one("invoke_workflow review")
    attrs = rnd.attributes
    assert list(attrs["agent_trace.consensus.participants"]) == AGENTS
    assert attrs["agent_trace.consensus.outcome"] == "consensus"
    assert attrs["agent_trace.consensus.confidence"] == 0.8
    assert attrs["agent_trace.consensus.votes.for"] == 2
    assert attrs["gen_ai.conversation.id"] == "s"
    votes = {v.name: v.attributes for v in spans.votes(rnd)}
    assert set(votes) == {"vote ethics", "vote legal"}
    assert votes["vote legal"]["agent_trace.vote.weight"] == 2.0
    assert votes["vote legal"]["agent_trace.vote.confidence"] == 0.7


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_monitor_consensus_reads_a_dict(spans: CapturedSpans, is_async: bool) -> None:
    with agent_trace.session("review"):
        returned = await call(is_async, AGENTS, "proposal", RESULT_DICT)

    assert returned is RESULT_DICT
    attrs = spans.one("consensus_round weighted_vote").attributes
    assert attrs["agent_trace.consensus.outcome"] == "no_consensus"
    assert attrs["agent_trace.consensus.confidence"] == 0.4
    assert attrs["agent_trace.consensus.votes.for"] == 1
    assert attrs["agent_trace.consensus.votes.against"] == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("odd_result", [None, 42, "text", ["a", "b"], {"votes": "not-a-map"}])
async def test_monitor_consensus_returns_any_value_unchanged(
    spans: CapturedSpans, is_async: bool, odd_result: Any
) -> None:
    with agent_trace.session("review"):
        returned = await call(is_async, AGENTS, "proposal", odd_result)

    assert returned is odd_result
    assert len(spans.find("consensus_round weighted_vote")) == 1


class DeadlockError(Exception):
    pass


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_monitor_consensus_lets_the_exception_through(
    spans: CapturedSpans, is_async: bool
) -> None:
    error = DeadlockError("no agreement possible")

    @agent_trace.monitor_consensus("weighted_vote")
    def failing_sync(participants: list[str]) -> None:
        raise error

    @agent_trace.monitor_consensus("weighted_vote")
    async def failing_async(participants: list[str]) -> None:
        raise error

    with pytest.raises(DeadlockError) as info, agent_trace.session("review"):
        if is_async:
            await failing_async(AGENTS)
        else:
            failing_sync(AGENTS)

    assert info.value is error
    rnd = spans.one("consensus_round weighted_vote")
    assert rnd.status.status_code is StatusCode.ERROR
    assert rnd.attributes["agent_trace.consensus.outcome"] == "error"
    assert rnd.attributes["error.type"].endswith("DeadlockError")


def test_monitor_consensus_keeps_the_function_signature_and_name() -> None:
    assert build_consensus_sync.__name__ == "build_consensus_sync"
    assert build_consensus_async.__name__ == "build_consensus_async"
    import inspect

    assert inspect.iscoroutinefunction(build_consensus_async)
    assert not inspect.iscoroutinefunction(build_consensus_sync)


def test_monitor_consensus_reads_agents_given_as_objects(spans: CapturedSpans) -> None:
    @dataclass
    class Agent:
        name: str

    @agent_trace.monitor_consensus("majority")
    def decide(agents: list[Agent]) -> dict[str, Any]:
        return {"consensus_achieved": True}

    with agent_trace.session("review"):
        decide(agents=[Agent("ethics"), Agent("ops")])

    participants = spans.one("consensus_round majority").attributes[
        "agent_trace.consensus.participants"
    ]
    assert list(participants) == ["ethics", "ops"]


def test_monitor_consensus_numbers_the_round_from_a_round_argument(
    agent_trace_spans: CapturedSpans,
) -> None:
    @agent_trace.monitor_consensus("weighted_vote")
    def decide(participants: list[str], round: int = 1) -> dict[str, object]:
        return {"consensus_achieved": True, "votes": {p: "approve" for p in participants}}

    with agent_trace.session("review"):
        decide(["ethics"])
        decide(["ethics"], round=2)

    numbers = [
        r.attributes.get("agent_trace.consensus.round")
        for r in agent_trace_spans.find(prefix="consensus_round")
    ]
    assert numbers == [1, 2]


class _Nameless:
    """A participant whose name cannot be read: its `name` property and its text raise."""

    @property
    def name(self) -> str:
        raise RuntimeError("no name")

    def __str__(self) -> str:
        raise RuntimeError("no text")


class _VoteFailed(Exception):
    pass


def test_monitor_consensus_passes_the_exception_on_when_a_participant_cannot_be_named(
    spans: CapturedSpans,
) -> None:
    error = _VoteFailed("quorum lost")

    @agent_trace.monitor_consensus("majority")
    def decide(participants: list[Any]) -> None:
        raise error

    with pytest.raises(_VoteFailed) as raised:
        decide([_Nameless()])

    assert raised.value is error
    [rnd] = spans.find(prefix="consensus_round majority")
    assert rnd.status.status_code is StatusCode.ERROR


def test_none_for_a_round_threshold_means_the_default(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("vote", participants=None, threshold=None) as rnd:  # type: ignore[arg-type]
            rnd.vote("a", "approve")
            result = rnd.conclude()

    assert rnd.threshold == 0.5
    assert rnd.participants == ()
    assert result.consensus_achieved


# -- values a caller should not have passed -------------------------------------------------------


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # Each warning is rate-limited to one a minute per kind; start every test unlimited.
    _log._reset_for_tests()
    with caplog.at_level(logging.WARNING, logger="agent_trace"):
        yield caplog
    _log._reset_for_tests()


def _warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("agent_trace")]


def test_a_quorum_given_as_text_is_read_as_a_number(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("majority", participants=AGENTS, quorum="3") as rnd:  # type: ignore[arg-type]
            rnd.vote("ethics", "approve")
            rnd.vote("legal", "approve")
            result = rnd.conclude()

    assert rnd.quorum == 3
    assert result.outcome == "no_quorum"
    attrs = spans.one("consensus_round majority").attributes
    assert attrs["agent_trace.consensus.quorum"] == 3


def test_a_fractional_quorum_is_rounded_up(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("majority", quorum=1.5) as rnd:  # type: ignore[arg-type]
            rnd.vote("ethics", "approve")
            result = rnd.conclude()

    assert rnd.quorum == 2
    assert result.outcome == "no_quorum"


@pytest.mark.parametrize("quorum", ["most", -1, math.nan, [2]], ids=repr)
def test_an_unusable_quorum_means_the_default_and_is_logged(
    spans: CapturedSpans, warnings: pytest.LogCaptureFixture, quorum: Any
) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("majority", participants=AGENTS, quorum=quorum) as rnd:
            rnd.vote("ethics", "approve")
            rnd.vote("legal", "approve")
            result = rnd.conclude()

    assert rnd.quorum == 2  # half of three participants, rounded up
    assert result.outcome == "consensus"
    [message] = _warned(warnings)
    assert "quorum" in message and "using 2" in message


def test_an_unusable_threshold_means_the_default_and_is_logged(
    spans: CapturedSpans, warnings: pytest.LogCaptureFixture
) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("majority", threshold="most") as rnd:  # type: ignore[arg-type]
            pass

    assert rnd.threshold == 0.5
    [message] = _warned(warnings)
    assert "threshold 'most'" in message


def test_a_negative_weight_counts_as_nothing(
    spans: CapturedSpans, warnings: pytest.LogCaptureFixture
) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("weighted_vote", participants=["a", "b", "c"]) as rnd:
            rnd.vote("a", "approve", weight=1.0)
            rnd.vote("b", "reject", weight=-1.0)
            with rnd.voter("c") as voter:
                voter.cast("reject", weight=-5.0)
            result = rnd.conclude()

    # The rejecting votes are cast (they count for the quorum) but weigh nothing.
    assert (result.votes_for, result.votes_against) == (1, 2)
    assert result.agreement == 1.0
    assert result.decision == "approve"
    assert rnd.votes == {"a": ("approve", 1.0), "b": ("reject", 0.0), "c": ("reject", 0.0)}
    weights = {v.name: v.attributes["agent_trace.vote.weight"] for v in spans.find(prefix="vote ")}
    assert weights == {"vote a": 1.0, "vote b": 0.0, "vote c": 0.0}
    [message] = _warned(warnings)  # once, not per vote
    assert "vote weight -1.0" in message


def test_only_negative_weights_decide_nothing(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("weighted_vote", participants=["a", "b"]) as rnd:
            rnd.vote("a", "approve", weight=-2.0)
            rnd.vote("b", "reject", weight=-1.0)
            result = rnd.conclude()

    assert result.outcome == "no_consensus"
    assert result.agreement == 0.0
    assert result.decision is None


def test_weights_near_the_float_limit_do_not_overflow_the_tally(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("weighted_vote", participants=["a", "b", "c"]) as rnd:
            rnd.vote("a", "approve", weight=1e308)
            rnd.vote("b", "approve", weight=1e308)
            rnd.vote("c", "reject", weight=1e308)
            result = rnd.conclude()

    assert result.outcome == "consensus"
    assert result.agreement == pytest.approx(2 / 3, abs=1e-6)


def test_changed_votes_leave_no_weight_behind(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("weighted_vote", participants=["a", "b"], threshold=1.0) as rnd:
            rnd.vote("a", "reject", weight=0.1)
            rnd.vote("b", "reject", weight=0.2)
            rnd.vote("b", "approve", weight=1e-9)
            rnd.vote("a", "approve", weight=1e-9)
            result = rnd.conclude()

    # Adding and taking back 0.1 and 0.2 in floats leaves 2.8e-17 on the reject side: tallied
    # that way, the agreement would fall short of 1.0 against the small approving weights.
    assert result.agreement == 1.0
    assert result.outcome == "consensus"


class _NoFloat:
    def __float__(self) -> float:
        raise RuntimeError("no number")


def test_a_weight_whose_conversion_raises_counts_as_nothing(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("weighted_vote", participants=["a", "b"]) as rnd:
            rnd.vote("a", "approve", weight=_NoFloat())  # type: ignore[arg-type]
            with rnd.voter("b") as voter:
                voter.cast("reject", weight=_NoFloat())  # type: ignore[arg-type]
            result = rnd.conclude()

    assert (result.votes_for, result.votes_against) == (1, 1)
    assert result.agreement == 0.0
    assert voter.cast_value == "reject"


class _Outcome(enum.Enum):
    AGREED = "agreed"


def test_an_outcome_given_as_an_enum_is_recorded_as_text(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.consensus_round("majority") as rnd:
            result = rnd.conclude(_Outcome.AGREED, decision=_Outcome.AGREED)  # type: ignore[arg-type]

    assert isinstance(result.outcome, str) and isinstance(result.decision, str)
    rounds = spans.metrics()["agent_trace.consensus.rounds"]
    assert [labels["outcome"] for labels, _ in rounds] == [result.outcome]


def test_monitor_consensus_keeps_the_votes_after_an_unusable_weight(spans: CapturedSpans) -> None:
    @agent_trace.monitor_consensus("weighted_vote")
    def decide(participants: list[str]) -> dict[str, Any]:
        votes = {
            "ethics": {"value": "approve", "weight": "heavy"},
            "legal": {"value": "approve", "weight": 2.0},
        }
        return {"votes": votes}

    decide(["ethics", "legal"])

    rnd = spans.one("consensus_round weighted_vote")
    weights = {v.name: v.attributes["agent_trace.vote.weight"] for v in spans.votes(rnd)}
    assert weights == {"vote ethics": 0.0, "vote legal": 2.0}
    assert rnd.attributes["agent_trace.consensus.outcome"] == "consensus"

"""Vote rationales and other free text reach the spans only with `capture_content=True`."""

from __future__ import annotations

import pytest

import agent_trace
from agent_trace.testing import capture_spans

RATIONALE = "the proposal shares health records with a vendor"


def run_round() -> None:
    with agent_trace.session("review") as s, s.consensus_round("majority") as rnd:
        rnd.vote("ethics", "reject", rationale=RATIONALE)
        with rnd.voter("legal") as voter:
            voter.cast("reject", rationale=RATIONALE)


def all_values(spans: list) -> list[object]:  # type: ignore[type-arg]
    return [value for span in spans for value in (span.attributes or {}).values()]


def test_rationale_is_left_out_without_content_capture() -> None:
    with capture_spans() as captured:
        run_round()

        votes = captured.find(prefix="vote ")
        assert len(votes) == 2
        for vote in votes:
            assert "agent_trace.vote.rationale" not in vote.attributes
        assert RATIONALE not in all_values(captured.spans)


def test_rationale_is_kept_with_content_capture() -> None:
    with capture_spans(capture_content=True) as captured:
        run_round()

        votes = captured.find(prefix="vote ")
        assert [v.attributes["agent_trace.vote.rationale"] for v in votes] == [RATIONALE] * 2


@pytest.mark.parametrize(
    "key",
    ["agent_trace.vote.rationale", "agent_trace.message.content", "gen_ai.input.messages"],
)
def test_content_set_by_hand_is_scrubbed_without_capture(key: str) -> None:
    with capture_spans() as captured:
        with agent_trace.session("review") as s:
            s.set_attribute(key, RATIONALE)

        attrs = captured.one("invoke_workflow review").attributes
        assert attrs[key] != RATIONALE
        assert key in attrs["agent_trace.scrubbed"]


def test_exception_message_stays_out_of_the_status_without_capture() -> None:
    with capture_spans() as captured:
        with pytest.raises(ValueError), agent_trace.session("review"):
            raise ValueError(RATIONALE)

        span = captured.one("invoke_workflow review")
        assert RATIONALE not in (span.status.description or "")
        [event] = span.events
        assert RATIONALE not in str(dict(event.attributes or {}))


def test_exception_message_is_kept_with_capture() -> None:
    with capture_spans(capture_content=True) as captured:
        with pytest.raises(ValueError), agent_trace.session("review"):
            raise ValueError(RATIONALE)

        span = captured.one("invoke_workflow review")
        assert RATIONALE in (span.status.description or "")
        assert span.events[0].attributes["exception.message"] == RATIONALE

"""The scrubber remembers attributes it found clean; what it remembers never lets a secret by."""

from __future__ import annotations

from typing import Any

import agent_trace
from agent_trace.pipeline.scrub import REDACTED, Scrubber
from agent_trace.testing import capture_spans


def test_a_key_seen_clean_before_still_has_a_new_secret_value_redacted() -> None:
    with capture_spans() as spans:
        for note in ("all fine", "all fine", "write to bob@example.org", "all fine"):
            with agent_trace.turn("ethics") as turn:
                turn.set_attribute("agent_trace.note", note)

        notes = [s.attributes["agent_trace.note"] for s in spans.spans]

    assert notes[0] == notes[1] == notes[3] == "all fine"
    assert "bob@example.org" not in notes[2]


def test_a_secret_key_is_redacted_whatever_value_was_seen_clean_under_other_keys() -> None:
    with capture_spans() as spans:
        for key in ("agent_trace.note", "app.password", "agent_trace.note"):
            with agent_trace.turn("ethics") as turn:
                turn.set_attribute(key, "hunter2")

        values = [dict(s.attributes or {}) for s in spans.spans]

    assert values[0]["agent_trace.note"] == values[2]["agent_trace.note"] == "hunter2"
    assert values[1]["app.password"] == REDACTED


def test_a_span_made_of_attributes_seen_clean_is_passed_on_unchanged() -> None:
    with capture_spans() as spans:
        for _ in range(3):
            with agent_trace.session("review", agents=["ethics", "legal"]) as s:
                s.set_attribute("agent_trace.score", 0.5)
        first, *rest = spans.spans

    scrubber = Scrubber()
    # The first span teaches the scrubber its attributes; the others repeat all but the id.
    assert scrubber.span(first) is first
    for span in rest:
        assert scrubber.span(span) is span
        assert scrubber.span(span) is span
        assert "agent_trace.scrubbed" not in (span.attributes or {})


def test_unhashable_values_set_through_the_raw_api_are_still_scrubbed() -> None:
    headers: dict[str, Any] = {"authorization": "Bearer abcdefgh12345678", "x": "1"}
    with capture_spans() as spans:
        for _ in range(2):
            with agent_trace.session("review") as s:
                s.span.set_attribute("http.request.headers", headers)  # type: ignore[arg-type]

        recorded = [s.attributes["http.request.headers"] for s in spans.spans]

    for value in recorded:
        assert value["authorization"] == REDACTED
        assert value["x"] == "1"


def test_a_caller_session_id_that_holds_an_address_is_still_scrubbed() -> None:
    with capture_spans() as spans:
        with agent_trace.session("review", session_id="bob@example.org") as s, s.turn("ethics"):
            pass
        ids = [s.attributes["gen_ai.conversation.id"] for s in spans.spans]

    assert len(ids) == 2
    assert all("bob@example.org" not in value for value in ids)


def test_only_hex_ids_under_harmless_keys_are_learned_as_clean() -> None:
    scrubber = Scrubber()
    scrubber.learn_clean_id("gen_ai.conversation.id", "0123456789abcdef0123456789abcdef")
    scrubber.learn_clean_id("app.api_key", "deadbeefdeadbeef")
    scrubber.learn_clean_id("gen_ai.conversation.id", "token=deadbeef")

    kept, _ = scrubber.attributes({"gen_ai.conversation.id": "0123456789abcdef0123456789abcdef"})
    secret, touched = scrubber.attributes({"app.api_key": "deadbeefdeadbeef"})
    query, _ = scrubber.attributes({"gen_ai.conversation.id": "token=deadbeef"})

    assert kept is None
    assert secret == {"app.api_key": REDACTED} and touched == ["app.api_key"]
    assert query is not None and "deadbeef" not in str(query["gen_ai.conversation.id"])

"""Any Python value set as an attribute becomes one value every sink can represent the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace

import agent_trace
from agent_trace._attributes import MAX_NAME_LENGTH, MAX_SEQUENCE_ITEMS, MAX_VALUE_LENGTH
from agent_trace.testing import CapturedSpans, capture_spans


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans() as captured:
        yield captured


def recorded(spans: CapturedSpans, value: Any) -> Any:
    with agent_trace.session("review") as s:
        s.set_attribute("app.value", value)
    return spans.one("invoke_workflow review").attributes.get("app.value", "<absent>")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (True, True),
        (42, 42),
        (0.5, 0.5),
        (None, "<absent>"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (2**63, str(2**63)),
        (-(2**63), -(2**63)),
        (b"caf\xc3\xa9", "café"),
        (b"\xff", "\ufffd"),
        (["a", "b"], ("a", "b")),
        ([1, 2], (1, 2)),
        ([1, 2.5], (1.0, 2.5)),
        ([True, False], (True, False)),
        ([1, "a"], '[1,"a"]'),
        ([1, 2**70], f'[1,"{2**70}"]'),
        ([1.5, 2**70], f'[1.5,"{2**70}"]'),
        ([1, 10**400], f'[1,"{10**400}"]'),
        ({"b": 1, "a": [1, None]}, '{"a":[1,null],"b":1}'),
        (Unprintable(), "<unrepresentable Unprintable>"),
    ],
    ids=repr,
)
def test_values_follow_the_documented_rule(spans: CapturedSpans, value: Any, expected: Any) -> None:
    assert recorded(spans, value) == expected


def test_long_strings_are_cut_with_a_note(spans: CapturedSpans) -> None:
    value = recorded(spans, "x" * (MAX_VALUE_LENGTH + 10))

    assert value.startswith("x" * MAX_VALUE_LENGTH)
    assert value.endswith("...[truncated 10 chars]")


def test_long_sequences_keep_their_first_items(spans: CapturedSpans) -> None:
    value = recorded(spans, list(range(MAX_SEQUENCE_ITEMS + 50)))

    assert value == tuple(range(MAX_SEQUENCE_ITEMS))


def test_ints_too_long_for_decimal_text_are_named_by_size(spans: CapturedSpans) -> None:
    value = 10**5000

    assert recorded(spans, value) == f"<int of {value.bit_length()} bits>"


def test_deeply_nested_mappings_become_bounded_json(spans: CapturedSpans) -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(20):
        inner["k"] = {}
        inner = inner["k"]

    value = recorded(spans, nested)

    assert isinstance(json.loads(value), dict)
    assert "<nested too deep>" in value


class Wordy(int):
    def __str__(self) -> str:
        return "seven"

    def __le__(self, other: object) -> bool:
        raise RuntimeError("no ordering")


class Shouting(str):
    def __len__(self) -> int:
        raise RuntimeError("no length")

    def __str__(self) -> str:
        return "LOUD"


class Half(float):
    def __repr__(self) -> str:
        return "a half"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Wordy(7), 7),
        (Shouting("quiet"), "quiet"),
        (Half(0.5), 0.5),
        ([Wordy(1), Wordy(2)], (1, 2)),
        ([Shouting("a")], ("a",)),
        ({"n": Wordy(3), "s": Shouting("t")}, '{"n":3,"s":"t"}'),
    ],
    ids=repr,
)
def test_subclasses_of_plain_types_are_recorded_as_the_plain_value(
    spans: CapturedSpans, value: Any, expected: Any
) -> None:
    found = recorded(spans, value)

    assert found == expected
    assert type(found) is type(expected)
    if isinstance(found, tuple):
        assert [type(item) for item in found] == [type(item) for item in expected]


def test_lone_surrogates_become_replacement_characters_in_every_text(
    spans: CapturedSpans,
) -> None:
    with agent_trace.session("odd\ud800", note="x\udcff") as s:
        s.span.set_attribute("raw\udfff.key", ["a\ud800", "b"])
        s.span.add_event("event\ud800", {"k": "v\ud800"})

    [session] = spans.sessions()
    assert session.name == "invoke_workflow odd\ufffd"
    attributes = session.attributes or {}
    assert attributes["agent_trace.session.note"] == "x\ufffd"
    assert list(attributes["raw\ufffd.key"]) == ["a\ufffd", "b"]
    assert "raw\udfff.key" not in attributes
    [event] = session.events
    assert event.name == "event\ufffd"
    assert dict(event.attributes or {}) == {"k": "v\ufffd"}


def test_spans_of_the_raw_api_get_bounded_names_without_surrogates(
    spans: CapturedSpans,
) -> None:
    tracer = trace.get_tracer("raw-instrumentation")
    tracer.start_span("raw\ud800").end()
    tracer.start_span("r" * (MAX_NAME_LENGTH + 7)).end()

    short, long = spans.spans
    assert short.name == "raw\ufffd"
    assert long.name == "r" * MAX_NAME_LENGTH + "...[truncated 7 chars]"


def test_clean_spans_keep_their_names_and_are_not_marked_scrubbed(spans: CapturedSpans) -> None:
    with agent_trace.session("révision", agents=["éthique"]):
        pass

    [session] = spans.sessions()
    assert session.name == "invoke_workflow révision"
    assert "agent_trace.scrubbed" not in (session.attributes or {})

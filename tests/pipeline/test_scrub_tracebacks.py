"""Without content capture, an exported stack trace keeps its frames and exception types only.

The messages and notes of every exception in it are replaced, however the traceback lays them
out: chained causes and contexts, and exception groups, whose lines stand behind a margin
(`  | `) and whose members are separated by `+---- n ----` lines. The traces here are the ones
the running Python formats for real exceptions.
"""

# ruff: noqa: F821 - ExceptionGroup is a builtin from Python 3.11 (these tests skip before)

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

import agent_trace
from agent_trace.testing import capture_spans

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups: 3.11+")

SECRET = "Zq9vLm2Xw8RtK4"
PLACEHOLDER = "[content not captured]"


def exported_stack(raise_it: Callable[[], None], *, capture_content: bool = False) -> str:
    """The stack trace of the exception event a session records when `raise_it` raises."""
    with capture_spans(capture_content=capture_content) as spans:
        with pytest.raises((ValueError, ExceptionGroup)), agent_trace.session("review"):
            raise_it()
        [event] = [e for e in spans.one("invoke_workflow review").events if e.name == "exception"]
        stack = event.attributes["exception.stacktrace"]
    assert isinstance(stack, str)
    return stack


def _member_with_cause() -> ValueError:
    try:
        raise KeyError(f"cause {SECRET}")
    except KeyError as cause:
        try:
            member = ValueError(f"member {SECRET}\nsecond line {SECRET}\n\n{SECRET}")
            member.add_note(f"note {SECRET}")
            raise member from cause
        except ValueError as raised:
            return raised


def _inner_group() -> ExceptionGroup[Exception]:
    try:
        raise ExceptionGroup(f"inner {SECRET}", [TypeError(f"t {SECRET}"), _member_with_cause()])
    except ExceptionGroup as raised:
        return raised


def _raise_nested_groups() -> None:
    group = ExceptionGroup(f"outer {SECRET}\nmore {SECRET}", [_inner_group(), OSError(SECRET)])
    group.add_note(f"outer note {SECRET}")
    raise group


def test_nested_group_messages_notes_and_causes_are_replaced() -> None:
    stack = exported_stack(_raise_nested_groups)

    assert SECRET not in stack
    assert "Exception Group Traceback (most recent call last):" in stack
    assert "The above exception was the direct cause of the following exception:" in stack
    for header in ("ExceptionGroup", "TypeError", "ValueError", "KeyError", "OSError"):
        assert f"| {header}: {PLACEHOLDER}" in stack


def test_frames_inside_groups_are_kept() -> None:
    stack = exported_stack(_raise_nested_groups)

    for function in ("_raise_nested_groups", "_inner_group", "_member_with_cause"):
        assert f", in {function}" in stack
    assert "+-+---------------- 1 ----------------" in stack
    assert "+---------------- 2 ----------------" in stack


def _raise_wide_group() -> None:
    raise ExceptionGroup(SECRET, [ValueError(f"{n} {SECRET}") for n in range(20)])


def test_members_past_the_group_width_are_counted_not_described() -> None:
    stack = exported_stack(_raise_wide_group)

    assert SECRET not in stack
    assert "and 5 more exceptions" in stack
    assert stack.count(f"| ValueError: {PLACEHOLDER}") == 15


def _raise_deep_group() -> None:
    error: Exception = ValueError(SECRET)
    for level in range(12):
        error = ExceptionGroup(f"level {level} {SECRET}", [error])
    raise error


def test_groups_past_the_depth_limit_leak_nothing() -> None:
    stack = exported_stack(_raise_deep_group)

    assert SECRET not in stack
    assert "max_group_depth" in stack


def _raise_group_caused_by_an_error() -> None:
    try:
        raise RuntimeError(f"first {SECRET}")
    except RuntimeError as error:
        raise ExceptionGroup(f"then {SECRET}", [LookupError(SECRET)]) from error


def test_a_group_after_a_plain_exception_in_the_chain_is_replaced_too() -> None:
    stack = exported_stack(_raise_group_caused_by_an_error)

    assert SECRET not in stack
    assert f"RuntimeError: {PLACEHOLDER}" in stack
    assert f"| ExceptionGroup: {PLACEHOLDER}" in stack
    assert f"| LookupError: {PLACEHOLDER}" in stack


def _fail_in_an_expression_continued_with_a_bar(flags: int, text: str) -> int:
    # The second line is the one that raises; its traceback line starts with "| ".
    return (flags
            | int(text))  # fmt: skip


def _raise_plain_error_from_a_bar_line() -> None:
    _fail_in_an_expression_continued_with_a_bar(1, SECRET)


def _raise_group_from_a_bar_line() -> None:
    try:
        _fail_in_an_expression_continued_with_a_bar(1, SECRET)
    except ValueError as error:
        raise ExceptionGroup("failed", [error]) from None


@pytest.mark.parametrize(
    "raise_it",
    [_raise_plain_error_from_a_bar_line, _raise_group_from_a_bar_line],
    ids=["outside a group", "inside a group"],
)
def test_a_source_line_starting_with_a_bar_stays_a_frame(raise_it: Callable[[], None]) -> None:
    stack = exported_stack(raise_it)

    assert SECRET not in stack
    assert "| int(text))" in stack
    assert f"ValueError: {PLACEHOLDER}" in stack


def test_group_messages_are_kept_with_content_capture() -> None:
    stack = exported_stack(_raise_nested_groups, capture_content=True)

    assert f"TypeError: t {SECRET}" in stack
    assert f"note {SECRET}" in stack

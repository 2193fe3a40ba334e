"""Spans whose parent has ended, scopes exited in another thread or task, lists of names.

A parent that is valid but not recording has either been sampled out upstream (nothing under
it is recorded) or has ended: work under an ended parent is still exported, on the newest
agent-trace scope before it that is still open, else on the ended span itself.
"""

# Nested `with` blocks here mirror the span tree under test; merging them would hide it.
# ruff: noqa: SIM117

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import agent_trace
from agent_trace import _log
from agent_trace.testing import CapturedSpans, capture_spans

T = TypeVar("T")
REMOTE_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
REMOTE_SPAN_ID = 0xB7AD6B7169203331


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans() as captured:
        yield captured


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Warnings of agent-trace, with the once-a-minute memory cleared before and after."""
    _log._reset_for_tests()
    with caplog.at_level(logging.WARNING):
        yield caplog
    _log._reset_for_tests()


def _in_fresh_context(fn: Callable[[], T]) -> T:
    return contextvars.Context().run(fn)


def _parent_of(spans: CapturedSpans, span: ReadableSpan) -> ReadableSpan | None:
    parent = spans.parent(span)
    assert span.parent is None or parent is not None, f"{span.name}: parent not exported"
    return parent


def _loud(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- ended parents ------------------------------------------------------------------------------


def test_a_turn_opened_on_a_session_handle_after_its_block_is_a_child_of_that_session(
    spans: CapturedSpans,
) -> None:
    def run() -> None:
        review = agent_trace.session("review")
        with review:
            pass
        with review.turn("late"):
            pass

    _in_fresh_context(run)

    late = spans.one("invoke_agent late")
    assert _parent_of(spans, late) is spans.one("invoke_workflow review")


def test_a_tool_run_after_its_turn_ended_is_a_child_of_the_open_session(
    spans: CapturedSpans,
) -> None:
    def tool() -> None:
        with agent_trace.policy_check("late_tool"):
            pass

    def run() -> None:
        with agent_trace.session("review") as review:
            with review.turn("ethics"):
                wrapped = agent_trace.with_current_context(tool)
            worker = threading.Thread(target=wrapped)
            worker.start()
            worker.join()

    _in_fresh_context(run)

    check = spans.one("policy_check late_tool")
    assert _parent_of(spans, check) is spans.one("invoke_workflow review")


def test_a_tool_run_after_its_whole_session_ended_stays_in_that_trace(
    spans: CapturedSpans,
) -> None:
    def tool() -> None:
        with agent_trace.policy_check("late_tool"):
            pass

    def run() -> None:
        with agent_trace.session("review") as review:
            with review.turn("ethics"):
                wrapped = agent_trace.with_current_context(tool)
        wrapped()

    _in_fresh_context(run)

    check = spans.one("policy_check late_tool")
    session = spans.one("invoke_workflow review")
    assert check.context.trace_id == session.context.trace_id
    assert _parent_of(spans, check) is session


def test_a_sampled_out_parent_still_records_nothing_beneath_it() -> None:
    with capture_spans(sample_rate=0.0) as captured:
        with agent_trace.session("review") as review:
            with review.turn("ethics"):
                with agent_trace.policy_check("privacy"):
                    pass
        with review.turn("late"):
            pass

    assert captured.spans == []


def _under_remote_parent(flags: int) -> None:
    remote = SpanContext(
        REMOTE_TRACE_ID, REMOTE_SPAN_ID, is_remote=True, trace_flags=TraceFlags(flags)
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        with agent_trace.turn("standalone"):
            pass
    finally:
        otel_context.detach(token)


def test_a_standalone_turn_under_a_sampled_remote_parent_is_exported_beneath_it(
    spans: CapturedSpans,
) -> None:
    _in_fresh_context(lambda: _under_remote_parent(TraceFlags.SAMPLED))

    turn = spans.one("invoke_agent standalone")
    assert turn.parent is not None
    assert (turn.parent.trace_id, turn.parent.span_id) == (REMOTE_TRACE_ID, REMOTE_SPAN_ID)


def test_a_standalone_turn_under_an_unsampled_remote_parent_records_nothing(
    spans: CapturedSpans,
) -> None:
    _in_fresh_context(lambda: _under_remote_parent(TraceFlags.DEFAULT))

    assert spans.find("invoke_agent standalone") == []


# -- scopes exited elsewhere ----------------------------------------------------------------------


def _exit_in_a_thread(scope: agent_trace.Turn | agent_trace.Session) -> None:
    worker = threading.Thread(target=scope.__exit__, args=(None, None, None))
    worker.start()
    worker.join()


def test_turns_exited_in_another_thread_leave_later_turns_under_the_session(
    spans: CapturedSpans, warnings: pytest.LogCaptureFixture
) -> None:
    def run() -> None:
        with agent_trace.session("review") as review:
            for agent in ("ethics", "legal"):
                turn = review.turn(agent)
                turn.__enter__()
                _exit_in_a_thread(turn)
            with review.turn("final"):
                pass

    _in_fresh_context(run)

    session = spans.one("invoke_workflow review")
    for agent in ("ethics", "legal", "final"):
        assert _parent_of(spans, spans.one(f"invoke_agent {agent}")) is session, agent
    [warning] = _loud(warnings)
    assert "exited in another thread or task" in warning.getMessage()
    assert warning.exc_info is None


async def _exited_by_another_task() -> None:
    async with agent_trace.session("review") as review:
        turn = review.turn("ethics")
        await turn.__aenter__()
        await asyncio.create_task(turn.__aexit__(None, None, None))
        with review.policy_check("privacy"):
            pass


def test_a_turn_exited_by_another_task_leaves_what_follows_under_the_session(
    spans: CapturedSpans, warnings: pytest.LogCaptureFixture
) -> None:
    _in_fresh_context(lambda: asyncio.run(_exited_by_another_task()))

    session = spans.one("invoke_workflow review")
    assert _parent_of(spans, spans.one("invoke_agent ethics")) is session
    assert _parent_of(spans, spans.one("policy_check privacy")) is session
    assert len(_loud(warnings)) == 1


def test_a_session_exited_in_another_thread_does_not_adopt_the_next_session(
    spans: CapturedSpans, warnings: pytest.LogCaptureFixture
) -> None:
    def run() -> None:
        first = agent_trace.session("first")
        first.__enter__()
        _exit_in_a_thread(first)
        with agent_trace.session("second"):
            pass

    _in_fresh_context(run)

    assert spans.one("invoke_workflow second").parent is None
    assert len(_loud(warnings)) == 1


# -- lists of names -------------------------------------------------------------------------------


def test_a_lone_agent_name_is_a_list_of_one(spans: CapturedSpans) -> None:
    with agent_trace.session("review", agents="ethics") as review:
        assert review.agents == ("ethics",)

    attrs = spans.one("invoke_workflow review").attributes or {}
    assert attrs["agent_trace.session.agents"] == ("ethics",)


def test_an_agent_list_that_is_no_list_records_none_and_warns_once(
    spans: CapturedSpans, warnings: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):
        with agent_trace.session("review", agents=5):  # type: ignore[arg-type]
            pass

    assert all(
        "agent_trace.session.agents" not in (s.attributes or {})
        for s in spans.find("invoke_workflow review")
    )
    [warning] = _loud(warnings)
    assert "int" in warning.getMessage()

"""Sessions and turns as spans: names, kinds, parents and the attributes every span carries."""

# Nested `with` blocks here mirror the span tree under test; merging them would hide it.
# ruff: noqa: SIM117

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans

HASH = "cdd01ef066bc6cf2"
T = TypeVar("T")


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans(constitution_hash=HASH) as captured:
        yield captured


def assert_common_attributes(span: ReadableSpan, session_id: str, op: str) -> None:
    attrs = span.attributes or {}
    assert attrs["agent_trace.constitution.hash"] == HASH, span.name
    assert attrs["gen_ai.conversation.id"] == session_id, span.name
    assert attrs["sentry.op"] == op, span.name


def test_session_is_a_root_span_with_the_workflow_attributes(spans: CapturedSpans) -> None:
    with agent_trace.session(
        "ethical_review", session_id="s-1", agents=["ethics", "legal"], complexity=0.7
    ) as s:
        s.set_outcome("approved")

    root = spans.one("invoke_workflow ethical_review")
    assert root.parent is None
    assert root.kind is SpanKind.INTERNAL
    assert root.status.status_code is StatusCode.UNSET
    assert_common_attributes(root, "s-1", "agent_trace.session")
    attrs = root.attributes or {}
    assert attrs["gen_ai.operation.name"] == "invoke_workflow"
    assert attrs["gen_ai.workflow.name"] == "ethical_review"
    assert attrs["agent_trace.session.task_type"] == "ethical_review"
    assert list(attrs["agent_trace.session.agents"]) == ["ethics", "legal"]  # type: ignore[arg-type]
    assert attrs["agent_trace.session.complexity"] == 0.7
    assert attrs["agent_trace.session.outcome"] == "approved"


def test_session_handle_exposes_its_ids(spans: CapturedSpans) -> None:
    with agent_trace.session("review", session_id="given-id") as s:
        pass

    root = spans.one("invoke_workflow review")
    assert root.context is not None
    assert s.session_id == "given-id"
    assert s.trace_id == f"{root.context.trace_id:032x}"


def test_session_without_an_id_gets_a_fresh_one_each_time(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as first:
        pass
    with agent_trace.session("review") as second:
        pass

    assert first.session_id and second.session_id
    assert first.session_id != second.session_id
    assert first.trace_id != second.trace_id


def test_extra_session_attributes_are_namespaced(spans: CapturedSpans) -> None:
    with agent_trace.session("review", priority="high", **{"custom.key": 3}):
        pass

    attrs = spans.one("invoke_workflow review").attributes or {}
    assert attrs["agent_trace.session.priority"] == "high"
    assert attrs["custom.key"] == 3


def test_outcome_defaults_to_completed_or_failed(spans: CapturedSpans) -> None:
    with agent_trace.session("ok_case"):
        pass
    with pytest.raises(RuntimeError), agent_trace.session("failing_case"):
        raise RuntimeError("boom")

    assert spans.one("invoke_workflow ok_case").attributes["agent_trace.session.outcome"] == (
        "completed"
    )
    failed = spans.one("invoke_workflow failing_case")
    assert failed.attributes["agent_trace.session.outcome"] == "failed"
    assert failed.status.status_code is StatusCode.ERROR


def test_turns_are_children_of_the_session_with_agent_attributes(spans: CapturedSpans) -> None:
    with agent_trace.session("review", session_id="s-2") as s:
        with s.turn("ethics", role="reviewer") as turn:
            turn.set_attribute("agent_trace.turn.note", "looked fine")
        with s.turn("legal", agent_id="legal-7"):
            pass

    root = spans.one("invoke_workflow review")
    turns = spans.turns(root)
    assert [t.name for t in turns] == ["invoke_agent ethics", "invoke_agent legal"]
    for index, t in enumerate(turns, start=1):
        assert t.kind is SpanKind.INTERNAL
        assert spans.parent(t) is root
        assert_common_attributes(t, "s-2", "gen_ai.invoke_agent")
        assert t.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert t.attributes["agent_trace.turn.index"] == index
    assert turns[0].attributes["gen_ai.agent.name"] == "ethics"
    assert turns[0].attributes["agent_trace.agent.role"] == "reviewer"
    assert turns[0].attributes["agent_trace.turn.note"] == "looked fine"
    assert turns[1].attributes["gen_ai.agent.id"] == "legal-7"
    assert "agent_trace.agent.role" not in turns[1].attributes


def test_remote_turn_is_a_client_span(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s, s.turn("legal", remote=True):
        pass

    assert spans.one("invoke_agent legal").kind is SpanKind.CLIENT


async def test_async_session_and_turns_nest_the_same_way(spans: CapturedSpans) -> None:
    async with agent_trace.session("review", session_id="s-3") as s:
        async with s.turn("ethics"):
            async with s.turn("ethics-helper", remote=True):
                pass
        async with s.turn("legal"):
            pass

    root = spans.one("invoke_workflow review")
    ethics = spans.one("invoke_agent ethics")
    helper = spans.one("invoke_agent ethics-helper")
    legal = spans.one("invoke_agent legal")
    assert spans.parent(ethics) is root
    assert spans.parent(helper) is ethics
    assert helper.kind is SpanKind.CLIENT
    assert spans.parent(legal) is root
    for span in spans.spans:
        assert (span.attributes or {})["gen_ai.conversation.id"] == "s-3"
    spans.assert_no_orphans()


def test_module_level_turn_finds_the_current_session(spans: CapturedSpans) -> None:
    def deep_in_the_call_stack() -> agent_trace.Session | None:
        with agent_trace.turn("ops", role="executor"):
            return agent_trace.current_session()

    with agent_trace.session("review", session_id="s-4") as s:
        found = deep_in_the_call_stack()

    assert found is s
    ops = spans.one("invoke_agent ops")
    assert spans.parent(ops) is spans.one("invoke_workflow review")
    assert_common_attributes(ops, "s-4", "gen_ai.invoke_agent")
    assert ops.attributes["agent_trace.agent.role"] == "executor"


async def test_module_level_calls_nest_under_the_current_span(spans: CapturedSpans) -> None:
    async with agent_trace.session("review", session_id="s-5"), agent_trace.turn("ethics"):
        async with agent_trace.policy_check("privacy"):
            pass
        async with agent_trace.consensus_round("majority", participants=["a"]) as rnd:
            rnd.vote("a", "approve")
        async with agent_trace.handoff("ethics", "legal"):
            pass
        async with agent_trace.resolve_conflict(["ethics", "ops"], "vote"):
            pass
        async with agent_trace.escalate("deadlock"):
            pass

    turn = spans.one("invoke_agent ethics")
    children = {s.name for s in spans.children(turn)}
    assert children == {
        "policy_check privacy",
        "consensus_round majority",
        "handoff from ethics to legal",
        "resolve_conflict vote",
        "escalate deadlock",
    }
    for span in spans.spans:
        assert span.attributes["gen_ai.conversation.id"] == "s-5", span.name


def test_current_session_is_none_outside_a_session(spans: CapturedSpans) -> None:
    assert agent_trace.current_session() is None
    with agent_trace.session("review") as s:
        assert agent_trace.current_session() is s
    assert agent_trace.current_session() is None


def test_nested_session_is_a_child_span_with_its_own_conversation(spans: CapturedSpans) -> None:
    with agent_trace.session("outer", session_id="o") as outer:
        with agent_trace.session("inner", session_id="i") as inner:
            assert agent_trace.current_session() is inner
            with agent_trace.turn("a"):
                pass
        assert agent_trace.current_session() is outer

    inner_span = spans.one("invoke_workflow inner")
    assert spans.parent(inner_span) is spans.one("invoke_workflow outer")
    assert spans.one("invoke_agent a").attributes["gen_ai.conversation.id"] == "i"


async def test_session_handle_used_from_another_sessions_task_lands_in_its_own_session(
    spans: CapturedSpans,
) -> None:
    first_open = asyncio.Event()
    second_done = asyncio.Event()
    handle: list[agent_trace.Session] = []

    async def first_coordinator() -> None:
        async with agent_trace.session("first", session_id="first") as first:
            handle.append(first)
            first_open.set()
            await second_done.wait()

    async def second_coordinator() -> None:
        await first_open.wait()
        async with agent_trace.session("second", session_id="second"):
            # A handle to another (still open) session: its scopes belong to that session.
            async with handle[0].turn("borrowed"):
                pass
        second_done.set()

    await asyncio.gather(first_coordinator(), second_coordinator())

    borrowed = spans.one("invoke_agent borrowed")
    first_span = spans.one("invoke_workflow first")
    assert borrowed.attributes["gen_ai.conversation.id"] == "first"
    assert spans.parent(borrowed) is first_span
    assert borrowed.context.trace_id == first_span.context.trace_id


def test_turn_durations_and_session_counts_are_recorded_as_metrics(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.turn("ethics"):
            pass
        with s.turn("ethics"):
            pass
        s.set_outcome("approved")

    metrics = spans.metrics()
    assert metrics["agent_trace.turn.duration"] == [({"agent": "ethics"}, 2)]
    assert metrics["agent_trace.sessions"] == [({"task_type": "review", "outcome": "approved"}, 1)]


def _in_fresh_context(fn: Callable[[], T]) -> T:
    """Run `fn` in a copy of the current context, so whatever it leaves current stays there."""
    return contextvars.copy_context().run(fn)


def _nothing_current() -> bool:
    return agent_trace.current_session() is None and not trace.get_current_span().is_recording()


def test_a_scope_entered_twice_is_ended_once_at_its_last_exit(spans: CapturedSpans) -> None:
    def run() -> tuple[bool, bool]:
        review = agent_trace.session("twice")
        with review:
            with review:
                pass
            still_current = agent_trace.current_session() is review and review.span.is_recording()
        return still_current, _nothing_current()

    assert _in_fresh_context(run) == (True, True)
    assert len(spans.find("invoke_workflow twice")) == 1


def test_sessions_exited_out_of_order_leave_neither_current(spans: CapturedSpans) -> None:
    def run() -> bool:
        outer = agent_trace.session("outer")
        inner = agent_trace.session("inner")
        outer.__enter__()
        inner.__enter__()
        outer.__exit__(None, None, None)
        inner.__exit__(None, None, None)
        return _nothing_current()

    assert _in_fresh_context(run) is True
    [outer_span] = spans.find("invoke_workflow outer")
    [inner_span] = spans.find("invoke_workflow inner")
    assert inner_span.parent is not None
    assert inner_span.parent.span_id == outer_span.context.span_id


def test_a_turn_exited_after_its_session_leaves_the_session_current_nowhere(
    spans: CapturedSpans,
) -> None:
    def run() -> tuple[bool, bool]:
        review = agent_trace.session("review")
        review.__enter__()
        turn = review.turn("ethics")
        turn.__enter__()
        check = agent_trace.policy_check("privacy")
        check.__enter__()
        review.__exit__(None, None, None)
        turn.__exit__(None, None, None)
        # Exited before the check: neither the turn nor the session is current any more.
        neither = trace.get_current_span() not in (turn.span, review.span)
        check.__exit__(None, None, None)
        return neither, _nothing_current()

    assert _in_fresh_context(run) == (True, True)
    with agent_trace.session("next"):
        pass
    assert spans.one("invoke_workflow next").parent is None

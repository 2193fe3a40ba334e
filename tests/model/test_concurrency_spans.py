"""Concurrent sessions never share spans; work handed to threads stays in its turn."""

# Nested `with` blocks here mirror the span tree under test; merging them would hide it.
# ruff: noqa: SIM117

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import context as otel_context

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans

SESSIONS = 50


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans() as captured:
        yield captured


async def coordinate(index: int) -> None:
    agents = ["ethics", "legal", "ops"]
    async with agent_trace.session("review", session_id=f"s{index}", agents=agents) as s:
        for agent in agents:
            # Alternate between the handle and the module-level call, and yield to the other
            # sessions at every step, so their contexts interleave as much as possible.
            scope = s.turn(agent) if index % 2 else agent_trace.turn(agent)
            async with scope:
                await asyncio.sleep(random.random() / 1000)
                async with agent_trace.policy_check("privacy"):
                    await asyncio.sleep(0)
        async with s.consensus_round("majority", participants=agents) as rnd:
            for agent in agents:
                await asyncio.sleep(0)
                rnd.vote(agent, "approve")


async def test_fifty_concurrent_sessions_keep_their_spans_apart(spans: CapturedSpans) -> None:
    await asyncio.gather(*(coordinate(i) for i in range(SESSIONS)))

    roots = spans.sessions()
    assert len(roots) == SESSIONS
    assert len({r.context.trace_id for r in roots}) == SESSIONS
    by_session = {r.attributes["gen_ai.conversation.id"]: r for r in roots}

    crossing = []
    for span in spans.spans:
        session_id = span.attributes["gen_ai.conversation.id"]
        root = by_session[session_id]
        if span.context.trace_id != root.context.trace_id:
            crossing.append(span.name)
    assert crossing == []

    for session_id, root in by_session.items():
        turns = spans.children(root, prefix="invoke_agent ")
        assert [t.name for t in turns] == [
            "invoke_agent ethics",
            "invoke_agent legal",
            "invoke_agent ops",
        ], session_id
        for turn in turns:
            assert turn.attributes["gen_ai.conversation.id"] == session_id
            [check] = spans.children(turn)
            assert check.name == "policy_check privacy"
            assert check.attributes["gen_ai.conversation.id"] == session_id
        [rnd] = spans.rounds(root)
        assert len(spans.votes(rnd)) == 3
        assert len(spans.descendants(root)) == 3 + 3 + 1 + 3
    spans.assert_no_orphans()


def test_work_run_in_a_thread_with_a_copied_context_stays_in_its_turn(
    spans: CapturedSpans,
) -> None:
    def check_in_worker(policy: str) -> agent_trace.Session | None:
        with agent_trace.policy_check(policy):
            return agent_trace.current_session()

    with ThreadPoolExecutor(max_workers=4) as pool:
        with agent_trace.session("review", session_id="s") as s, s.turn("ethics"):
            futures = [
                pool.submit(contextvars.copy_context().run, check_in_worker, f"p{i}")
                for i in range(4)
            ]
            found = [f.result() for f in futures]

    assert found == [s] * 4
    turn = spans.one("invoke_agent ethics")
    checks = spans.children(turn)
    assert sorted(c.name for c in checks) == [f"policy_check p{i}" for i in range(4)]
    for check in checks:
        assert check.attributes["gen_ai.conversation.id"] == "s"


def test_work_run_in_a_thread_with_the_otel_context_stays_in_its_turn(
    spans: CapturedSpans,
) -> None:
    """The way OpenTelemetry's own docs hand context to a thread: attach the captured context."""

    def check_in_worker(ctx: otel_context.Context, policy: str) -> agent_trace.Session | None:
        token = otel_context.attach(ctx)
        try:
            with agent_trace.policy_check(policy):
                return agent_trace.current_session()
        finally:
            otel_context.detach(token)

    with ThreadPoolExecutor(max_workers=2) as pool:
        with agent_trace.session("review", session_id="s") as s, s.turn("ethics"):
            ctx = otel_context.get_current()
            found = [pool.submit(check_in_worker, ctx, f"p{i}").result() for i in range(2)]

    assert found == [s, s]
    turn = spans.one("invoke_agent ethics")
    checks = spans.children(turn)
    assert len(checks) == 2
    for check in checks:
        assert check.attributes["gen_ai.conversation.id"] == "s"


async def test_work_sent_to_a_thread_from_async_code_stays_in_its_turn(
    spans: CapturedSpans,
) -> None:
    def blocking_check() -> None:
        with agent_trace.policy_check("privacy"):
            pass

    async with agent_trace.session("review", session_id="s"), agent_trace.turn("ethics"):
        # asyncio.to_thread copies the context, as run_in_executor does not.
        await asyncio.to_thread(blocking_check)

    check = spans.one("policy_check privacy")
    assert spans.parent(check) is spans.one("invoke_agent ethics")
    assert check.attributes["gen_ai.conversation.id"] == "s"


def test_threads_running_their_own_sessions_stay_apart(spans: CapturedSpans) -> None:
    def run(index: int) -> str:
        with agent_trace.session("review", session_id=f"t{index}") as s:
            for agent in ("a", "b"):
                with s.turn(agent):
                    pass
            return s.trace_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        trace_ids = list(pool.map(run, range(32)))

    assert len(set(trace_ids)) == 32
    for root in spans.sessions():
        session_id = root.attributes["gen_ai.conversation.id"]
        for turn in spans.turns(root):
            assert turn.attributes["gen_ai.conversation.id"] == session_id
        assert len(spans.turns(root)) == 2
    spans.assert_no_orphans()


async def test_a_cancelled_session_is_marked_cancelled_not_failed(spans: CapturedSpans) -> None:
    started = asyncio.Event()

    async def coordinator() -> None:
        async with agent_trace.session("review", session_id="c") as s, s.turn("ethics"):
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(coordinator())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    for name in ("invoke_workflow review", "invoke_agent ethics"):
        span = spans.one(name)
        assert span.attributes["agent_trace.cancelled"] is True, name
        assert span.status.status_code.name == "UNSET", name
        assert not span.events, name
    assert spans.one("invoke_workflow review").attributes["agent_trace.session.outcome"] == (
        "cancelled"
    )
    assert spans.metrics()["agent_trace.sessions"] == [
        ({"task_type": "review", "outcome": "cancelled"}, 1)
    ]

"""Context under concurrency: gathered voters, interleaved sessions, thread pools, cancellation.

Each test builds the span tree through the public API only, then checks parentage and ids in
what the in-memory sink received (the same spans every real sink gets).
"""

# Nested `with` blocks mirror the span tree under test; merging them would hide it.
# ruff: noqa: SIM117

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans() as captured:
        yield captured


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


# -- 1. gathered vote coroutines -------------------------------------------------------------


async def test_gathered_voters_are_siblings_under_their_round(spans: CapturedSpans) -> None:
    async def deliberate(rnd: agent_trace.ConsensusRound, agent: str, delay_s: float) -> str:
        async with rnd.voter(agent) as vote:
            # Every voter is suspended while the others open theirs: their contexts overlap.
            await asyncio.sleep(delay_s)
            vote.cast("approve" if agent != "ops" else "reject", confidence=0.8)
            return agent

    agents = ["ethics", "legal", "ops"]
    async with agent_trace.session("review", agents=agents) as s:
        async with s.consensus_round("majority", participants=agents) as rnd:
            done = await asyncio.gather(
                *(deliberate(rnd, a, d) for a, d in zip(agents, [0.03, 0.01, 0.02], strict=True))
            )

    assert done == agents
    round_span = spans.one("consensus_round majority")
    votes = spans.votes(round_span)
    assert sorted(v.name for v in votes) == [f"vote {a}" for a in sorted(agents)]
    vote_ids = {ids(v)[1] for v in votes}
    for vote in votes:
        assert parent_id(vote) == ids(round_span)[1]
        assert parent_id(vote) not in vote_ids
        assert ids(vote)[0] == ids(round_span)[0]
    # Nothing was opened under a vote either.
    assert [s for s in spans.spans if parent_id(s) in vote_ids] == []
    assert round_span.attributes["agent_trace.consensus.votes.for"] == 2
    spans.assert_no_orphans()


async def test_voters_opened_inside_another_voter_still_belong_to_the_round(
    spans: CapturedSpans,
) -> None:
    async with agent_trace.session("review") as s:
        async with s.consensus_round("majority", participants=["a", "b"]) as rnd:
            async with rnd.voter("a") as outer:
                # A voter that spawns the next agent's vote while its own is still open.
                async with rnd.voter("b") as inner:
                    inner.cast("approve")
                outer.cast("approve")

    round_span = spans.one("consensus_round majority")
    assert {parent_id(v) for v in spans.find(prefix="vote ")} == {ids(round_span)[1]}


# -- 2. interleaved sessions -----------------------------------------------------------------


async def test_interleaved_sessions_keep_their_own_trace_and_conversation(
    spans: CapturedSpans,
) -> None:
    # A strict A1, B1, A2, B2, ... order, with each turn still open when the other's starts.
    order: list[str] = []
    turns = {"A": asyncio.Event(), "B": asyncio.Event()}

    async def coordinator(name: str, other: str, session_id: str) -> str:
        async with agent_trace.session("review", session_id=session_id) as s:
            for index in range(1, 4):
                if name == "B" or index > 1:
                    await turns[name].wait()
                turns[name].clear()
                async with s.turn(f"{name}{index}"):
                    order.append(f"{name}{index}")
                    turns[other].set()
                    await asyncio.sleep(0.005)
                    async with agent_trace.policy_check("privacy"):
                        await asyncio.sleep(0)
            turns[other].set()
            return s.trace_id

    trace_a, trace_b = await asyncio.gather(
        coordinator("A", "B", "session-a"), coordinator("B", "A", "session-b")
    )

    assert order == ["A1", "B1", "A2", "B2", "A3", "B3"]
    assert trace_a != trace_b
    expected = {"A": ("session-a", trace_a), "B": ("session-b", trace_b)}
    for span in spans.spans:
        if span.name.startswith("invoke_workflow"):
            continue
        owner = span.name[-2] if span.name.startswith("invoke_agent") else None
        conversation = span.attributes["gen_ai.conversation.id"]
        trace_id = f"{ids(span)[0]:032x}"
        if owner is not None:
            assert (conversation, trace_id) == expected[owner], span.name
        else:
            # A policy check belongs to the turn it ran in, whichever session that is.
            turn = spans.parent(span)
            assert turn is not None
            assert (conversation, trace_id) == expected[turn.name[-2]]
    for session_id, trace_id in expected.values():
        root = spans.session(session_id)
        assert f"{ids(root)[0]:032x}" == trace_id
        assert len(spans.turns(root)) == 3
    spans.assert_no_orphans()


async def test_a_handle_used_from_the_other_sessions_task_still_lands_in_its_own_session(
    spans: CapturedSpans,
) -> None:
    ready = asyncio.Event()
    release = asyncio.Event()
    holder: dict[str, agent_trace.Session] = {}

    async def session_a() -> None:
        async with agent_trace.session("review", session_id="a") as s:
            holder["a"] = s
            ready.set()
            await release.wait()

    async def session_b() -> None:
        await ready.wait()
        async with agent_trace.session("review", session_id="b") as b:
            async with b.turn("b-turn"):
                # Code running inside B's turn records work for A through A's handle.
                with holder["a"].policy_check("privacy") as check:
                    check.passed()
        release.set()

    await asyncio.gather(session_a(), session_b())

    check = spans.one("policy_check privacy")
    root_a = spans.session("a")
    assert check.attributes["gen_ai.conversation.id"] == "a"
    assert ids(check)[0] == ids(root_a)[0]
    assert parent_id(check) == ids(root_a)[1]


# -- 3. thread pool and run_in_executor inside a turn ---------------------------------------


def tool_call(tool: str) -> int:
    """A tool as an instrumented library would trace it: a plain OpenTelemetry span."""
    tracer = trace.get_tracer("tests.tools")
    with tracer.start_as_current_span(f"execute_tool {tool}") as span:
        span.set_attribute("gen_ai.operation.name", "execute_tool")
        span.set_attribute("gen_ai.tool.name", tool)
        session = agent_trace.current_session()
        return 0 if session is None else len(session.session_id)


async def test_tool_calls_in_a_thread_pool_and_run_in_executor_are_children_of_the_turn(
    spans: CapturedSpans,
) -> None:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=3) as pool:
        async with agent_trace.session("review", session_id="tools") as s:
            async with s.turn("researcher") as turn:
                # Threads do not inherit context variables; the documented way hands the
                # caller's context over with each call.
                futures = [
                    pool.submit(contextvars.copy_context().run, tool_call, name)
                    for name in ("search", "fetch", "summarise")
                ]
                in_executor = await loop.run_in_executor(
                    None, functools.partial(contextvars.copy_context().run, tool_call, "rank")
                )
                results = [f.result() for f in futures] + [in_executor]

    assert results == [len("tools")] * 4
    turn_span = spans.one("invoke_agent researcher")
    tools = spans.find(prefix="execute_tool ")
    assert sorted(t.name for t in tools) == [
        "execute_tool fetch",
        "execute_tool rank",
        "execute_tool search",
        "execute_tool summarise",
    ]
    for tool in tools:
        assert parent_id(tool) == ids(turn_span)[1], tool.name
        assert ids(tool)[0] == ids(turn_span)[0]
        # Spans of other instrumentation go through the same pipeline (ours is the provider).
        assert tool.instrumentation_scope is not None
        assert tool.instrumentation_scope.name == "tests.tools"
    assert turn.trace_id == f"{ids(turn_span)[0]:032x}"
    spans.assert_no_orphans()


async def test_to_thread_carries_the_turn_without_help(spans: CapturedSpans) -> None:
    async with agent_trace.session("review"):
        async with agent_trace.turn("researcher"):
            await asyncio.gather(*(asyncio.to_thread(tool_call, f"t{i}") for i in range(4)))

    turn_span = spans.one("invoke_agent researcher")
    assert {parent_id(t) for t in spans.find(prefix="execute_tool ")} == {ids(turn_span)[1]}


# -- 4. cancelled voters ---------------------------------------------------------------------


async def test_cancelled_voters_are_ended_exported_and_marked(spans: CapturedSpans) -> None:
    agents = ["a1", "a2", "a3", "a4", "a5"]
    delays = [0.001, 0.005, 0.01, 30.0, 30.0]

    async def deliberate(rnd: agent_trace.ConsensusRound, agent: str, delay_s: float) -> None:
        async with rnd.voter(agent) as vote:
            async with agent_trace.policy_check("privacy"):
                await asyncio.sleep(delay_s)
            vote.cast("approve")

    async with agent_trace.session("review", agents=agents) as s:
        async with s.consensus_round("majority", participants=agents, quorum=3) as rnd:
            tasks = [
                asyncio.create_task(deliberate(rnd, a, d))
                for a, d in zip(agents, delays, strict=True)
            ]
            await asyncio.wait(tasks[:3])
            result = rnd.conclude()
            for task in tasks[3:]:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert result.outcome == "consensus"
    assert result.votes_for == 3
    assert [type(o).__name__ for o in outcomes] == ["NoneType"] * 3 + ["CancelledError"] * 2

    round_span = spans.one("consensus_round majority")
    assert round_span.end_time is not None
    votes = {v.name: v for v in spans.votes(round_span)}
    assert sorted(votes) == [f"vote {a}" for a in agents]
    for agent in agents[3:]:
        cancelled = votes[f"vote {agent}"]
        assert cancelled.end_time is not None
        assert cancelled.attributes["agent_trace.cancelled"] is True
        assert cancelled.status.status_code.name == "UNSET"
        [check] = spans.children(cancelled)
        assert check.attributes["agent_trace.cancelled"] is True
    for agent in agents[:3]:
        assert "agent_trace.cancelled" not in votes[f"vote {agent}"].attributes
    assert round_span.attributes["agent_trace.consensus.outcome"] == "consensus"
    spans.assert_no_orphans()


async def test_voters_cancelled_after_their_round_ended_leave_no_orphans(
    spans: CapturedSpans,
) -> None:
    started = asyncio.Event()

    async def slow_voter(rnd: agent_trace.ConsensusRound, agent: str) -> None:
        async with rnd.voter(agent):
            started.set()
            await asyncio.sleep(30)

    async with agent_trace.session("review") as s:
        async with s.consensus_round("majority", participants=["slow"]) as rnd:
            task = asyncio.create_task(slow_voter(rnd, "slow"))
            await started.wait()
        # The round has ended (and been exported); its straggler is cancelled afterwards.
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    vote = spans.one("vote slow")
    assert vote.attributes["agent_trace.cancelled"] is True
    assert spans.parent(vote) is spans.one("consensus_round majority")
    spans.assert_no_orphans()

"""Work handed to threads keeps its turn when wrapped with `with_current_context`."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import agent_trace
from agent_trace.testing import CapturedSpans


def _tool(name: str) -> str:
    with agent_trace.turn(f"tool-{name}"):
        return name


def test_thread_pool_and_run_in_executor_stay_in_the_turn(
    agent_trace_spans: CapturedSpans,
) -> None:
    async def main() -> None:
        async with agent_trace.session("review") as s, s.turn("ops"):
            with ThreadPoolExecutor(max_workers=3) as pool:
                futures = [
                    pool.submit(agent_trace.with_current_context(_tool), name)
                    for name in ("a", "b", "c")
                ]
                assert [f.result() for f in futures] == ["a", "b", "c"]
            loop = asyncio.get_running_loop()
            assert (
                await loop.run_in_executor(None, agent_trace.with_current_context(_tool), "d")
                == "d"
            )

    asyncio.run(main())
    turn = agent_trace_spans.one("invoke_agent ops")
    tools = agent_trace_spans.find(prefix="invoke_agent tool-")
    assert len(tools) == 4
    assert all(agent_trace_spans.parent(t) is turn for t in tools)
    session_id = turn.attributes["gen_ai.conversation.id"]
    assert all(t.attributes["gen_ai.conversation.id"] == session_id for t in tools)


def test_without_the_wrapper_a_pool_thread_starts_outside_the_turn(
    agent_trace_spans: CapturedSpans,
) -> None:
    with agent_trace.session("review") as s, s.turn("ops"), ThreadPoolExecutor(1) as pool:
        pool.submit(_tool, "bare").result()

    bare = agent_trace_spans.one("invoke_agent tool-bare")
    assert bare.parent is None


def test_the_same_wrapper_can_run_on_two_threads_at_once(
    agent_trace_spans: CapturedSpans,
) -> None:
    with agent_trace.session("review") as s, s.turn("ops"):
        wrapped = agent_trace.with_current_context(_tool)
        with ThreadPoolExecutor(max_workers=2) as pool:
            assert sorted(pool.map(wrapped, ["x", "y"])) == ["x", "y"]
    assert len(agent_trace_spans.find(prefix="invoke_agent tool-")) == 2

"""The imperative start/complete API on top of the span model."""

from __future__ import annotations

import asyncio

from agent_trace.agent_monitor import AgentMonitor
from agent_trace.testing import CapturedSpans


def test_completed_session_is_one_span_with_outcome(agent_trace_spans: CapturedSpans) -> None:
    monitor = AgentMonitor()
    monitor.start_coordination_session("s-1", "ethical_review", ["ethics", "legal"], 0.7)
    assert monitor.complete_coordination_session("s-1", success=False, rounds=2)

    span = agent_trace_spans.session("s-1")
    assert span.name == "invoke_workflow ethical_review"
    assert span.attributes["agent_trace.session.outcome"] == "failed"
    assert span.attributes["agent_trace.session.complexity"] == 0.7
    assert span.attributes["agent_trace.session.rounds"] == 2
    assert monitor.open_sessions == 0


def test_unknown_session_id_is_refused_without_error(agent_trace_spans: CapturedSpans) -> None:
    assert AgentMonitor().complete_coordination_session("never-started", success=True) is False


def test_registry_is_bounded_and_abandoned_sessions_are_exported(
    agent_trace_spans: CapturedSpans,
) -> None:
    monitor = AgentMonitor(max_open_sessions=10)
    for i in range(100):
        monitor.start_coordination_session(f"s{i}", "review")

    assert monitor.open_sessions == 10
    assert monitor.abandoned == 90
    abandoned = agent_trace_spans.find(agent_trace__session__outcome="abandoned")
    assert len(abandoned) == 90
    assert all(s.attributes["agent_trace.session.incomplete"] for s in abandoned)


def test_sessions_older_than_max_age_are_abandoned(agent_trace_spans: CapturedSpans) -> None:
    now = [0.0]
    monitor = AgentMonitor(max_age_s=60, clock=lambda: now[0])
    monitor.start_coordination_session("old", "review")
    now[0] = 61.0
    monitor.start_coordination_session("new", "review")

    assert monitor.open_sessions == 1
    assert agent_trace_spans.session("old").attributes["agent_trace.session.outcome"] == "abandoned"


def test_completion_from_another_task_ends_the_span(agent_trace_spans: CapturedSpans) -> None:
    monitor = AgentMonitor()

    async def main() -> None:
        await asyncio.create_task(_start(monitor))
        await asyncio.create_task(_complete(monitor))

    asyncio.run(main())
    assert agent_trace_spans.session("t").attributes["agent_trace.session.outcome"] == "completed"


async def _start(monitor: AgentMonitor) -> None:
    monitor.start_coordination_session("t", "review")


async def _complete(monitor: AgentMonitor) -> None:
    assert monitor.complete_coordination_session("t", success=True)


def test_the_monitor_completes_a_session_started_with_an_unhashable_id(
    agent_trace_spans: CapturedSpans,
) -> None:
    monitor = AgentMonitor()
    monitor.start_coordination_session(["s-1"], "review")  # type: ignore[arg-type]

    assert monitor.complete_coordination_session(["s-1"], success=True)  # type: ignore[arg-type]
    span = agent_trace_spans.one("invoke_workflow review")
    assert (span.attributes or {})["gen_ai.conversation.id"] == "['s-1']"
    assert monitor.open_sessions == 0

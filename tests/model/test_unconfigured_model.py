"""Imported but not configured: every call is a no-op that still runs the user's code."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import agent_trace


@pytest.fixture(autouse=True)
def unconfigured() -> Iterator[None]:
    agent_trace.shutdown(timeout_s=1.0)
    assert agent_trace.settings() is None
    yield


def test_sync_scopes_run_the_body_and_return_values() -> None:
    ran = []
    with agent_trace.session("review", agents=["a"]) as s:
        with s.turn("a") as turn:
            turn.set_attribute("k", "v")
            ran.append("turn")
        with s.consensus_round("majority", participants=["a", "b"]) as rnd:
            rnd.vote("a", "approve")
            with rnd.voter("b") as v:
                v.cast("approve")
        with s.policy_check("privacy") as check:
            check.violation("pii")
        with s.handoff("a", "b"), s.resolve_conflict(["a", "b"], "vote") as c:
            c.set_outcome("a")
        with s.escalate("deadlock") as esc:
            esc.set_outcome("approved")
        s.set_outcome("approved")
        ran.append("session")

    assert ran == ["turn", "session"]
    # The tally is the user's data, computed with or without tracing.
    assert rnd.result is not None and rnd.result.outcome == "consensus"
    assert s.trace_id == "0" * 32
    assert not turn.recording


async def test_async_scopes_and_module_functions_run_the_body() -> None:
    async with agent_trace.session("review") as s:
        assert agent_trace.current_session() is s
        async with agent_trace.turn("a"), agent_trace.policy_check("p"):
            value = 42
    assert value == 42


async def test_decorators_return_what_the_function_returns() -> None:
    @agent_trace.monitor_consensus("majority")
    async def decide(participants: list[str]) -> dict[str, object]:
        return {"consensus_achieved": True}

    @agent_trace.track_constitutional_compliance
    def check(x: int) -> bool:
        return x > 0

    result = await decide(["a"])

    assert result == {"consensus_achieved": True}
    assert check(1) is True
    assert check(-1) is False


def test_exceptions_pass_through_unconfigured_scopes() -> None:
    error = agent_trace.ConstitutionalViolationError("x", "privacy")

    with pytest.raises(agent_trace.ConstitutionalViolationError) as info:  # noqa: SIM117
        with agent_trace.session("review"), agent_trace.turn("a"):
            raise error

    assert info.value is error


def test_read_outs_are_empty_and_flush_succeeds() -> None:
    assert agent_trace.force_flush(timeout_s=0.1) is True
    assert agent_trace.shutdown(timeout_s=0.1) is True
    assert agent_trace.sink_status() == {}
    assert agent_trace.monitor_performance_target("t", 1.0, 2.0) is False
    assert isinstance(agent_trace.dropped_spans(), dict)

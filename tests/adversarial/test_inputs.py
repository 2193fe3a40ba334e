"""Awkward inputs through the public API: the traced program must never see an exception from
agent-trace, its own exceptions must pass through unchanged, and the spans must still arrive.

Faults these attacks found were pinned as strict xfails until fixed; every test here now
guards against an attack the library withstands.
"""

# ruff: noqa: SIM117

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agent_trace
from agent_trace.tracefile import iter_spans
from tests.adversarial._support import (
    FailingCompareInt,
    FailingEqStr,
    FailingLenStr,
    FailingStr,
    FailingStrError,
    FailingStrInt,
    WordyInt,
    captured,
    file_span_names,
    isolated,
    local_pipeline,
)
from tests.backends.otlp_recorder import OtlpHttpRecorder


def _no_exception(fn: Callable[[], Any]) -> None:
    """Run traced code; any exception that escapes is agent-trace's."""
    fn()


# -- attribute values -----------------------------------------------------------------------------


def test_list_holding_an_int_beyond_float_range_is_converted_not_raised() -> None:
    with captured() as spans:
        with agent_trace.session("sizes", sizes=[1, 10**400]):
            pass
        [session] = spans.sessions()
        assert "agent_trace.session.sizes" in (session.attributes or {})


def test_str_subclass_with_failing_len_is_not_raised() -> None:
    with captured() as spans:
        with agent_trace.session("odd", note=FailingLenStr("text")):
            pass
        assert len(spans.sessions()) == 1


def test_int_subclass_with_failing_comparison_is_not_raised() -> None:
    with captured() as spans:
        with agent_trace.session("odd", count=FailingCompareInt(3)):
            pass
        assert len(spans.sessions()) == 1


def test_str_subclass_with_failing_eq_does_not_lose_the_span() -> None:
    with captured() as spans:
        with agent_trace.session("odd", note=FailingEqStr("plain text")):
            pass
        assert len(spans.sessions()) == 1


def test_int_subclass_with_failing_str_does_not_poison_the_local_file_batch(
    tmp_path: Path,
) -> None:
    path = tmp_path / "traces.jsonl"
    local_pipeline(path)
    try:
        for index in range(5):
            with agent_trace.session(f"good{index}"):
                pass
        with agent_trace.session("odd", count=FailingStrInt(5)):
            pass
    finally:
        agent_trace.shutdown()
    names = file_span_names(path)
    assert [f"invoke_workflow good{i}" for i in range(5)] == names[:5]


def test_int_subclass_with_wordy_str_keeps_the_file_readable(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    local_pipeline(path)
    try:
        with agent_trace.session("good"):
            pass
        with agent_trace.session("odd", count=WordyInt(7)):
            pass
    finally:
        agent_trace.shutdown()
    stream = iter_spans(path)
    with stream:
        names = sorted(span.name for span in stream)
    assert stream.stats.skipped_lines == 0
    assert names == ["invoke_workflow good", "invoke_workflow odd"]


def test_lone_surrogate_does_not_sink_the_otlp_batch() -> None:
    with OtlpHttpRecorder() as recorder:
        agent_trace.configure(
            "adversarial",
            otlp_endpoint=recorder.traces_url,
            otlp_protocol="http",
            local_file=False,
            _env={},
        )
        try:
            for index in range(3):
                with agent_trace.session(f"good{index}"):
                    pass
            with agent_trace.session("odd\ud800", note="x\udcff"):
                pass
            agent_trace.force_flush(5)
        finally:
            agent_trace.shutdown()
        names = {span.name for request in recorder.requests for span in request.spans}
    assert {"invoke_workflow good0", "invoke_workflow good1", "invoke_workflow good2"} <= names


def _cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    items: list[Any] = [1]
    items.append(items)
    loop["items"] = items
    return loop


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"child": [value]}
    return value


AWKWARD_VALUES = {
    "cyclic": _cyclic(),
    "nested_5000": _nested(5000),
    "failing_str_object": FailingStr(),
    "failing_str_in_list": [FailingStr(), 1],
    "failing_str_dict_key": {FailingStr(): 1},
    "nul_bytes": "a\x00b",
    "raw_bytes": b"\xff\xfe\x00",
    "nan_list": [1.0, math.nan],
    "infinity": -math.inf,
    "huge_text": "x" * 2_000_000,
    "int_beyond_64_bits": 2**200,
    "set": {1, 2, 3},
    "generator": (i for i in range(3)),
    "none": None,
}


@pytest.mark.parametrize("value", AWKWARD_VALUES.values(), ids=list(AWKWARD_VALUES))
def test_awkward_attribute_values_are_converted(value: Any) -> None:
    with captured() as spans:
        with agent_trace.session("awkward", payload=value) as session:
            with session.turn("ethics", payload=value) as turn:
                turn.set_attribute("late", value)
                turn.set_attributes({"late.map": value})
            with session.consensus_round("vote") as rnd:
                rnd.vote("ethics", value, confidence=0.5)
                rnd.conclude()
            session.set_outcome(value)
        assert len(spans.sessions()) == 1
        assert len(spans.turns(spans.sessions()[0])) == 1


# -- names ----------------------------------------------------------------------------------------


NAMED_SCOPES: dict[str, Callable[[Any], Any]] = {
    "session task_type": lambda name: agent_trace.session(name),
    "turn agent": lambda name: agent_trace.turn(name),
    "handoff source": lambda name: agent_trace.handoff(name, "legal"),
    "policy_check policy": lambda name: agent_trace.policy_check(name),
    "consensus_round algorithm": lambda name: agent_trace.consensus_round(name),
    "escalate trigger": lambda name: agent_trace.escalate(name),
}


@pytest.mark.parametrize(
    "open_scope",
    [pytest.param(make, id=label) for label, make in NAMED_SCOPES.items()],
)
def test_name_whose_str_raises_does_not_raise(open_scope: Callable[[Any], Any]) -> None:
    with captured() as spans:
        with agent_trace.session("host"):
            with open_scope(FailingStr()):
                pass
        named = [s for s in spans.spans if "<unrepresentable FailingStr>" in s.name]
        assert len(named) == 1


def test_huge_agent_name_gives_a_bounded_span_name() -> None:
    with captured() as spans:
        with agent_trace.session("review") as session:
            with session.turn("a" * 1_000_000):
                pass
        [turn] = spans.turns(spans.sessions()[0])
        assert len(turn.attributes["gen_ai.agent.name"]) < 5000
        assert len(turn.name) < 8192


@pytest.mark.parametrize(
    "name",
    ["ethics\nlegal", "ops\r\n[ERROR] forged", "\x1b[31mred\x1b[0m", "tab\there", "nul\x00byte"],
)
def test_control_characters_in_names_do_not_raise(name: str) -> None:
    with captured() as spans:
        with agent_trace.session(name, agents=[name]) as session:
            with session.turn(name):
                pass
            with session.handoff(name, name, reason=name):
                pass
        assert spans.sessions()[0].attributes["agent_trace.session.task_type"] == name


def test_thousands_of_agents_in_one_round() -> None:
    agents = [f"agent-{index}" for index in range(5000)]
    with captured() as spans:
        with agent_trace.session("assembly", agents=agents) as session:
            with session.consensus_round("majority", participants=agents) as rnd:
                for agent in agents:
                    rnd.vote(agent, "approve")
                result = rnd.conclude()
        assert result.votes_for == 5000
        [rnd_span] = spans.rounds(spans.sessions()[0])
        assert rnd_span.attributes["agent_trace.consensus.participants.count"] == 5000
        assert len(spans.votes(rnd_span)) == 5000


# -- arguments of the wrong shape -----------------------------------------------------------------


def test_performance_target_with_huge_int_does_not_raise() -> None:
    with captured():
        with agent_trace.session("targets"):
            assert agent_trace.monitor_performance_target("latency", 5.0, 10**400) is False


def test_process_message_with_unusable_message_does_not_raise() -> None:
    with captured() as spans:
        with agent_trace.session("messages"):
            with agent_trace.process_message("legal", 42):
                pass
        assert spans.find(prefix="process legal")


def test_vote_with_unusable_weight_does_not_raise() -> None:
    with captured():
        with agent_trace.session("votes") as session:
            with session.consensus_round("weighted") as rnd:
                rnd.vote("ethics", "approve", weight="heavy")  # type: ignore[arg-type]
                rnd.vote("legal", "approve", weight=10**400)
                rnd.vote("ops", "approve", weight=math.nan)


def test_timed_vote_with_unusable_weight_does_not_raise() -> None:
    with captured():
        with agent_trace.session("votes") as session:
            with session.consensus_round("weighted") as rnd:
                with rnd.voter("ethics") as voter:
                    voter.cast("approve", weight="heavy")  # type: ignore[arg-type]


NONE_ARGUMENTS: dict[str, Callable[[], Any]] = {
    "session agents=None": lambda: agent_trace.session("t", agents=None),  # type: ignore[arg-type]
    "round participants=None": lambda: agent_trace.consensus_round(
        "v",
        participants=None,  # type: ignore[arg-type]
    ),
    "round threshold=None": lambda: agent_trace.consensus_round(
        "v",
        threshold=None,  # type: ignore[arg-type]
    ),
    "conflict parties=None": lambda: agent_trace.resolve_conflict(None, "vote"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize(
    "open_scope",
    [pytest.param(make, id=label) for label, make in NONE_ARGUMENTS.items()],
)
def test_none_for_optional_arguments_does_not_raise(open_scope: Callable[[], Any]) -> None:
    with captured():
        with open_scope():
            pass


def test_monitor_consensus_calls_the_function_when_a_participant_cannot_be_named() -> None:
    calls: list[int] = []

    @agent_trace.monitor_consensus("weighted_vote")
    def build(participants: list[Any]) -> dict[str, bool]:
        calls.append(len(participants))
        return {"consensus_achieved": True}

    with captured():
        assert build([FailingStr()]) == {"consensus_achieved": True}
    assert calls == [1]


def test_compliance_decorator_accepts_a_partial() -> None:
    def check(rules: list[str], proposal: str) -> bool:
        return proposal not in rules

    with captured() as spans:
        traced = agent_trace.track_constitutional_compliance(functools.partial(check, ["x"]))
        assert traced("y") is True
        assert spans.find(prefix="policy_check ")


def test_a_tie_is_not_consensus_to_approve() -> None:
    with captured():
        with agent_trace.session("review") as session:
            with session.consensus_round("majority", participants=["a", "b"]) as rnd:
                rnd.vote("a", "approve")
                rnd.vote("b", "reject")
                result = rnd.conclude()
    assert result.decision != "approve"


# -- exceptions -----------------------------------------------------------------------------------


def test_exception_whose_str_raises_still_ends_the_span() -> None:
    with captured() as spans:
        with pytest.raises(FailingStrError):
            with agent_trace.session("failing") as session:
                with session.turn("ethics"):
                    raise FailingStrError()
        assert [s.name for s in spans.sessions()] == ["invoke_workflow failing"]
        assert len(spans.turns(spans.sessions()[0])) == 1


def test_violation_whose_message_cannot_be_shown_still_ends_the_span() -> None:
    error = agent_trace.ConstitutionalViolationError(FailingStr(), "privacy")  # type: ignore[arg-type]
    with captured() as spans:
        with pytest.raises(agent_trace.ConstitutionalViolationError):
            with agent_trace.session("failing"):
                raise error
        assert [s.name for s in spans.sessions()] == ["invoke_workflow failing"]


class _AppError(Exception):
    pass


def test_user_exception_passes_through_unchanged() -> None:
    error = _AppError("the agent fell over")
    with captured():
        with pytest.raises(_AppError) as raised:
            with agent_trace.session("review") as session:
                with session.turn("ethics"), session.policy_check("privacy"):
                    with session.consensus_round("vote"):
                        raise error
    assert raised.value is error
    assert error.__cause__ is None
    assert error.__context__ is None
    assert str(error) == "the agent fell over"


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
def test_base_exceptions_pass_through(error: BaseException) -> None:
    with captured() as spans:
        with pytest.raises(type(error)) as raised:
            with agent_trace.session("interrupted"):
                raise error
        assert raised.value is error
        assert len(spans.sessions()) == 1


def test_violation_passes_through_and_is_recorded() -> None:
    with captured() as spans:
        with pytest.raises(agent_trace.ConstitutionalViolationError):
            with agent_trace.session("review") as session:
                with session.policy_check("privacy"):
                    raise agent_trace.ConstitutionalViolationError("x", "pii")
        [check] = spans.find(prefix="policy_check ")
        assert check.attributes["agent_trace.compliance.result"] == "violation"


# -- scope lifecycle ------------------------------------------------------------------------------


def _next_session_is_a_root() -> tuple[bool, bool]:
    """(a new session has no parent, no session is current) after the attack ran."""
    with captured() as spans:
        with agent_trace.session("next"):
            pass
        [span] = spans.find("invoke_workflow next")
        return span.parent is None, agent_trace.current_session() is None


def test_out_of_order_exit_leaves_no_span_current() -> None:
    def attack() -> tuple[bool, bool]:
        with captured():
            outer = agent_trace.session("outer")
            inner = outer.turn("ethics")
            outer.__enter__()
            inner.__enter__()
            outer.__exit__(None, None, None)
            inner.__exit__(None, None, None)
        return _next_session_is_a_root()

    assert isolated(attack) == (True, True)


def test_double_enter_leaves_no_span_current() -> None:
    def attack() -> tuple[bool, bool]:
        with captured():
            scope = agent_trace.session("twice")
            scope.__enter__()
            scope.__enter__()
            scope.__exit__(None, None, None)
            scope.__exit__(None, None, None)
        return _next_session_is_a_root()

    assert isolated(attack) == (True, True)


def test_exit_twice_and_exit_without_enter_do_not_raise() -> None:
    def attack() -> tuple[bool, bool]:
        with captured() as spans:
            scope = agent_trace.session("twice")
            scope.__enter__()
            scope.__exit__(None, None, None)
            scope.__exit__(None, None, None)
            agent_trace.session("never").__exit__(None, None, None)
            assert len(spans.find("invoke_workflow twice")) == 1
        return _next_session_is_a_root()

    assert isolated(attack) == (True, True)


def test_handles_used_after_their_block_ended() -> None:
    with captured() as spans:
        with agent_trace.session("ended") as session:
            with session.consensus_round("vote") as rnd:
                pass
        with session.turn("late"):
            pass
        session.set_outcome("late")
        session.set_attribute("late", 1)
        rnd.vote("ethics", "approve")
        rnd.conclude()
        with rnd.voter("legal") as voter:
            voter.cast("reject")
        assert len(spans.find("invoke_workflow ended")) == 1


def test_deep_nesting_of_scopes() -> None:
    with captured() as spans:
        with contextlib.ExitStack() as stack:
            session = stack.enter_context(agent_trace.session("deep"))
            for index in range(3000):
                stack.enter_context(session.turn(f"agent-{index % 7}"))
        assert len(spans.spans) == 3001
        spans.assert_no_orphans()


def test_generator_left_unfinished_still_exports_its_session() -> None:
    def steps() -> Iterator[int]:
        with agent_trace.session("generator") as session:
            with session.turn("ethics"):
                yield 1
                yield 2

    def attack() -> None:
        with captured() as spans:
            running = steps()
            next(running)
            del running
            gc.collect()
            assert len(spans.find("invoke_workflow generator")) == 1

    isolated(attack)


def test_threads_and_asyncio_keep_spans_in_their_sessions() -> None:
    def tool(index: int) -> None:
        with agent_trace.turn(f"tool-{index}"):
            pass

    async def coordinate(index: int) -> None:
        async with agent_trace.session(f"s{index}") as session:
            async with session.turn("ethics"):
                await asyncio.sleep(0)
                await asyncio.to_thread(agent_trace.with_current_context(tool), index)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, agent_trace.with_current_context(tool), index)

    async def main() -> None:
        await asyncio.gather(*(coordinate(i) for i in range(40)))

    with captured() as spans:
        asyncio.run(main())
        sessions = spans.sessions()
        assert len(sessions) == 40
        for session in sessions:
            index = session.name.removeprefix("invoke_workflow s")
            tools = [
                s for s in spans.descendants(session) if s.name == f"invoke_agent tool-{index}"
            ]
            assert len(tools) == 2
        spans.assert_no_orphans()


def test_one_session_shared_by_many_threads() -> None:
    with captured() as spans:
        with agent_trace.session("shared") as session:

            def work(index: int) -> None:
                for _ in range(100):
                    with session.turn(f"agent-{index}"):
                        pass

            threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        turns = spans.turns(spans.sessions()[0])
        assert len(turns) == 1600
        assert len({t.attributes["agent_trace.turn.index"] for t in turns}) == 1600

"""A scope's span takes its converted attributes as they are, at its start and later: exactly
what the SDK's own cleaning of them would have stored, on every path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import agent_trace
from agent_trace.model import _scope
from agent_trace.testing import capture_spans


def _workload() -> None:
    with agent_trace.session(
        "review",
        session_id="s-1",
        agents=["ethics", "legal", "ops"],
        complexity=0.5,
        odd="a\ud800",
        long="x" * 5000,
        numbers=[1, 2.5],
        mixed=[1, "a"],
        mapping={"k": [1, 2]},
        big=2**70,
        nan=float("nan"),
    ) as s:
        s.set_attribute("app.note", "x")
        s.set_attribute("app.list", ["a", "b"])
        s.set_attribute("app.numbers", [1, 2])
        s.set_attribute("app.note", "set again, moved to the end")
        s.set_attributes({"app.big": 2**70, "app.none": None, "app.odd": "b\udfff", "": "x"})
        s.set_attribute("", "an empty key")
        with s.turn("ethics", role="reviewer", remote=True, agent_id="e-1") as turn:
            turn.set_attributes({"app.mixed": [1, "a"], "app.flag": True, "app.nan": float("inf")})
        with s.consensus_round("majority", participants=("ethics", "legal"), quorum=2) as rnd:
            rnd.vote("ethics", "approve", weight=2.0)
            rnd.conclude()
            rnd.conclude("override\ud800", decision="approve")
        with s.consensus_round("empty"):
            pass
        for count in (110, 120):
            with s.turn(f"many{count}", **{f"app.k{i:03}": i for i in range(count)}) as crowded:
                crowded.set_attributes({f"app.late{i}": i for i in range(20)})
        with s.handoff("ethics", "legal", reason="next"):
            pass
        with s.send_message("ethics", "legal", message_type="request") as message:
            pass
        with s.process_message("legal", message, message_type="request"):
            pass
        with s.policy_check("no_pii"):
            pass
        with s.escalate("deadlock", severity="high", **{"": "an empty key"}):
            pass
        s.set_outcome("approved")


def _recorded(workload: Callable[[], None]) -> dict[str, dict[str, Any]]:
    with capture_spans() as spans:
        workload()
        return {s.name: dict(s.attributes or {}) for s in spans.spans}


def _without_ids(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k != "agent_trace.message.id"}


def test_spans_get_the_attributes_the_sdk_path_would_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = _recorded(_workload)
    monkeypatch.setattr(_scope, "_MAX_ATTRIBUTES", -1)  # every span the SDK's way
    slow = _recorded(_workload)

    assert fast.keys() == slow.keys()
    for name in fast:
        assert _without_ids(fast[name]) == _without_ids(slow[name]), name
        # The same order too: a key set again moves to the end on both paths.
        assert list(_without_ids(fast[name])) == list(_without_ids(slow[name])), name
        for key, value in fast[name].items():
            assert type(value) is type(slow[name][key]), (name, key)


def test_a_long_session_id_of_the_caller_is_cut_as_the_sdk_cuts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def workload() -> None:
        with agent_trace.session("review", session_id="i" * 5000) as s, s.turn("ethics"):
            pass

    fast = _recorded(workload)
    monkeypatch.setattr(_scope, "_MAX_ATTRIBUTES", -1)
    slow = _recorded(workload)

    assert fast == slow
    assert 4096 < len(fast["invoke_agent ethics"]["gen_ai.conversation.id"]) < 5000


def test_a_scope_with_more_attributes_than_the_limit_keeps_its_identity() -> None:
    extra = {f"app.k{i:03}": i for i in range(200)}
    with capture_spans() as spans:
        with agent_trace.turn("ethics", **extra):
            pass
        attrs = dict(spans.one("invoke_agent ethics").attributes or {})

    assert len(attrs) == 128
    assert attrs["gen_ai.agent.name"] == "ethics"
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["app.k199"] == 199

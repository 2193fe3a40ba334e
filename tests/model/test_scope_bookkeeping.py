"""What the scopes' fast paths must keep: fork ownership, the attribute rule, result texts."""

from __future__ import annotations

import os

import agent_trace
from agent_trace.testing import capture_spans


def test_a_scope_inherited_through_fork_is_ended_by_its_parent_only() -> None:
    with capture_spans() as spans:
        turn = agent_trace.turn("ethics")
        turn.__enter__()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                turn.__exit__(None, None, None)
                with agent_trace.turn("child"):
                    pass
                os.write(write_end, ",".join(s.name for s in spans.spans).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            exported_in_child = pipe.read().decode()
        os.waitpid(pid, 0)
        turn.__exit__(None, None, None)

        assert exported_in_child == "invoke_agent child"
        assert [s.name for s in spans.spans] == ["invoke_agent ethics"]


def test_scope_attributes_follow_the_rule_for_every_plain_type() -> None:
    class Label(str):
        def __str__(self) -> str:
            raise AssertionError("a subclass's own method ran")

    with capture_spans() as spans:
        with agent_trace.turn(
            "ethics",
            big=2**70,
            small=-(2**63),
            flag=True,
            ratio=float("nan"),
            none=None,
            label=Label("kept"),
            long="x" * 5000,
            odd="a\ud800",
        ):
            pass
        attrs = dict(spans.one("invoke_agent ethics").attributes or {})

    assert attrs["big"] == str(2**70)
    assert attrs["small"] == -(2**63)
    assert attrs["flag"] is True
    assert attrs["ratio"] == "NaN"
    assert "none" not in attrs
    assert attrs["label"] == "kept" and type(attrs["label"]) is str
    assert attrs["long"].startswith("x" * 4096) and attrs["long"].endswith("[truncated 904 chars]")
    assert attrs["odd"] == "a\ufffd"


def test_a_round_outcome_given_as_odd_text_is_recorded_by_the_rule() -> None:
    with capture_spans() as spans:
        with agent_trace.consensus_round("majority") as rnd:
            rnd.conclude("settled\ud800", decision="appr\udfffove")
        attrs = dict(spans.one("consensus_round majority").attributes or {})

    assert attrs["agent_trace.consensus.outcome"] == "settled\ufffd"
    assert attrs["agent_trace.consensus.decision"] == "appr\ufffdove"
    assert attrs["agent_trace.consensus.votes.for"] == 0
    assert attrs["agent_trace.consensus.agreement"] == 0.0


def test_lists_of_names_follow_the_rule_on_every_path() -> None:
    class Name(str):
        pass

    many = [f"agent-{i}" for i in range(200)]
    with capture_spans() as spans:
        with agent_trace.session("plain", agents=["ethics", "legal"]):
            pass
        with agent_trace.session("many", agents=many):
            pass
        with agent_trace.session("odd", agents=["a\ud800", "y" * 5000, Name("ops")]):
            pass
        agents = {
            s.name: s.attributes["agent_trace.session.agents"]
            for s in spans.spans
            if s.attributes and "agent_trace.session.agents" in s.attributes
        }

    assert list(agents["invoke_workflow plain"]) == ["ethics", "legal"]
    assert list(agents["invoke_workflow many"]) == many[:128]
    odd = list(agents["invoke_workflow odd"])
    assert odd[0] == "a\ufffd"
    assert odd[1].startswith("y" * 4096) and odd[1].endswith("[truncated 904 chars]")
    assert odd[2] == "ops" and type(odd[2]) is str

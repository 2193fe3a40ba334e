"""The README's quick start runs as printed and records what it says it records."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import agent_trace
from agent_trace import _attributes as A
from agent_trace.tracefile import iter_spans

ROOT = Path(__file__).resolve().parent.parent


class Verdict(NamedTuple):
    vote: str
    confidence: float


def quick_start_code() -> str:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize(
    ("votes", "outcome", "decision"),
    [
        # ethics weighs 2: 3 of 4 for, over the 0.66 threshold.
        ({"ethics": "approve", "legal": "approve", "ops": "reject"}, "approved", "approve"),
        # 2 of 4 for: under the threshold, no consensus.
        ({"ethics": "reject", "legal": "approve", "ops": "approve"}, "rejected", None),
    ],
)
def test_the_quick_start_runs_as_printed(
    votes: dict[str, str],
    outcome: str,
    decision: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The quick start configures from its arguments and the environment: the test's own
    # environment is left out, and the local file (the default sink) lands in tmp_path.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(agent_trace, "configure", functools.partial(agent_trace.configure, _env={}))

    async def ask(agent: str, proposal: str) -> Verdict:
        return Verdict(votes[agent], 0.9)

    namespace: dict[str, Any] = {"ask": ask}
    try:
        exec(compile(quick_start_code(), "README.md", "exec"), namespace)
        asyncio.run(namespace["review"]("a proposal"))
    finally:
        assert agent_trace.shutdown(timeout_s=5) is True

    spans = list(iter_spans(tmp_path / ".agent-trace" / "traces.jsonl", strict=True))
    by_name = {span.name: span for span in spans}
    assert sorted(by_name) == [
        "consensus_round weighted_vote",
        "invoke_agent ethics",
        "invoke_agent legal",
        "invoke_agent ops",
        "invoke_workflow ethical_review",
        "vote ethics",
        "vote legal",
        "vote ops",
    ]
    session = by_name["invoke_workflow ethical_review"]
    assert session.attributes[A.SESSION_OUTCOME] == outcome
    assert {span.trace_id for span in spans} == {session.trace_id}
    assert {span.attributes[A.CONSTITUTION_HASH] for span in spans} == {"3f2a9c01d4e5b6a7"}
    round_attrs = by_name["consensus_round weighted_vote"].attributes
    assert round_attrs.get(A.CONSENSUS + "decision") == decision

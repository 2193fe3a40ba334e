"""`python -m examples.governance_review`: runs the board traced to the local file by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from examples.governance_review import load_constitution, load_proposals

REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any sink or hash setting the developer's shell may carry."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SENTRY_", "AGENT_TRACE_", "CONSTITUTIONAL_HASH"))
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_module(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.governance_review"],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def spans_in(path: Path) -> list[dict[str, object]]:
    spans = []
    for line in path.read_text(encoding="utf-8").splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                spans.extend(scope["spans"])
    return spans


def string_attr(span: dict[str, object], key: str) -> str | None:
    for item in span["attributes"]:  # type: ignore[attr-defined]
        if item["key"] == key:
            return str(item["value"].get("stringValue"))
    return None


def test_module_run_prints_the_summary_and_writes_every_session_to_the_local_file(
    tmp_path: Path,
) -> None:
    done = run_module(tmp_path)

    assert done.returncode == 0, done.stderr
    assert f"{len(load_proposals())} governance reviews" in done.stdout
    assert "compliance:" in done.stdout
    spans = spans_in(tmp_path / ".agent-trace" / "traces.jsonl")
    sessions = [s for s in spans if s["name"] == "invoke_workflow governance_review"]
    assert len(sessions) == len(load_proposals())
    expected_hash = load_constitution().hash
    assert {string_attr(s, "agent_trace.constitution.hash") for s in spans} == {expected_hash}


def test_module_run_refuses_a_stale_constitutional_hash_before_tracing_anything(
    tmp_path: Path,
) -> None:
    done = run_module(tmp_path, CONSTITUTIONAL_HASH="0123456789abcdef")

    assert done.returncode == 2
    assert "0123456789abcdef" in done.stderr
    assert load_constitution().hash in done.stderr
    assert not (tmp_path / ".agent-trace").exists()

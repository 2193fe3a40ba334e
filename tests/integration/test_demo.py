"""The main job end to end: `agent-trace demo` traced to the real Jaeger and Spotlight, and the
README's first command from a fresh clone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent_trace.tracefile import iter_spans
from tests.backends.jaeger import Jaeger
from tests.backends.spotlight import Spotlight

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "SENTRY_", "AGENT_TRACE_", "CONSTITUTIONAL_"))}
    env.update(extra)
    return env


def _sessions_in_summary(stdout: str) -> int:
    match = re.search(r"^(\d+) governance reviews", stdout, re.MULTILINE)
    assert match, stdout
    return int(match.group(1))


def test_demo_traces_appear_in_jaeger_and_spotlight(
    jaeger: Jaeger, spotlight: Spotlight, tmp_path: Path
) -> None:
    service = f"demo-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-m", "agent_trace.cli", "demo", "--concurrency", "4"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=_clean_env(
            OTEL_SERVICE_NAME=service,
            OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp_grpc_endpoint,
            SENTRY_DSN=spotlight.dsn,
        ),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sessions = _sessions_in_summary(result.stdout)
    assert sessions >= 40
    assert not (tmp_path / ".agent-trace").exists(), "remote sinks set: no local file"

    deadline = time.monotonic() + 15
    while len(traces := jaeger.find_traces(service, limit=1000)) < sessions:
        assert time.monotonic() < deadline, f"{len(traces)} of {sessions} traces in Jaeger"
        time.sleep(0.2)
    assert len(traces) == sessions
    roots = [s for t in traces for s in t["spans"] if not s["references"]]
    assert all(s["operationName"] == "invoke_workflow governance_review" for s in roots)

    transactions = spotlight.wait_for_transactions(sessions, timeout_s=20)
    assert {t["contexts"]["trace"]["trace_id"] for t in transactions} == {
        t["traceID"] for t in traces
    }
    blocked = int(re.search(r"blocked (\d+)", result.stdout).group(1))
    violation_events = [
        e for e in spotlight.error_events()
        if e.get("tags", {}).get("violation_type") and e.get("exception")
    ]
    assert len(violation_events) == blocked


def test_readme_first_command_from_a_fresh_clone(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    command = re.search(r"```sh\n(python3 -m venv .*agent-trace report)\n```", readme).group(1)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=60)

    result = subprocess.run(
        ["bash", "-c", command], cwd=clone, capture_output=True, text=True, timeout=900,
        env=_clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trace_file = clone / ".agent-trace" / "traces.jsonl"
    outcomes = {
        s.attributes.get("agent_trace.session.outcome")
        for s in iter_spans(trace_file)
        if s.name.startswith("invoke_workflow ")
    }
    assert outcomes == {"approved", "rejected", "blocked", "escalated", "failed"}
    for outcome in outcomes:
        assert re.search(rf"^\s+{outcome}\s+\d+", result.stdout, re.MULTILINE), outcome
    shutil.rmtree(clone / ".venv", ignore_errors=True)

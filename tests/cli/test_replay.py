"""`agent-trace replay`: a recorded trace file reaches Jaeger and Sentry with its ids intact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import agent_trace
from agent_trace.tracefile import iter_spans
from tests.backends.jaeger import Jaeger
from tests.backends.jaeger import iter_spans as jaeger_spans
from tests.backends.spotlight import Spotlight
from tests.integration.scenario import run_reference_session


def _record(path: Path, sessions: int) -> set[str]:
    agent_trace.configure("recorded-offline", local_path=path, _env={})
    try:
        trace_ids = {run_reference_session(f"s{i}").trace_id for i in range(sessions)}
    finally:
        agent_trace.shutdown(timeout_s=5)
    return trace_ids


def _replay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SENTRY_", "AGENT_TRACE_", "CONSTITUTIONAL_"))
    }
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent_trace.cli", "replay", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
    )


@pytest.mark.integration
def test_replayed_file_arrives_in_jaeger_and_sentry_with_the_same_ids(
    tmp_path: Path, jaeger: Jaeger, spotlight: Spotlight
) -> None:
    path = tmp_path / "traces.jsonl"
    trace_ids = _record(path, sessions=3)
    recorded = {(s.trace_id, s.span_id, s.parent_span_id) for s in iter_spans(path)}

    result = _replay(
        str(path), "--otlp-endpoint", jaeger.otlp_grpc_endpoint, "--sentry-dsn", spotlight.dsn
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"replayed {len(recorded)} spans" in result.stdout
    arrived = set()
    for trace_id in trace_ids:
        trace = jaeger.wait_for_trace(trace_id, min_spans=13)
        for span in jaeger_spans([trace]):
            parent = next((r["spanID"] for r in span["references"]), None)
            arrived.add((span["traceID"], span["spanID"], parent))
        assert trace["processes"][trace["spans"][0]["processID"]]["serviceName"] == (
            "recorded-offline"
        )
    assert arrived == recorded
    transactions = spotlight.wait_for_transactions(3)
    assert {t["contexts"]["trace"]["trace_id"] for t in transactions} == trace_ids


def test_malformed_line_is_reported_with_its_number_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    _record(path, sessions=2)
    lines = path.read_text().splitlines()
    lines.insert(1, '{"resourceSpans": [ this is not json')
    path.write_text("\n".join(lines) + "\n")
    port = _closed()

    lenient = _replay(
        str(path),
        "--otlp-endpoint",
        f"http://127.0.0.1:{port}",
        "--otlp-protocol",
        "http",
        "--timeout",
        "2",
    )
    strict = _replay(
        str(path),
        "--strict",
        "--otlp-endpoint",
        f"http://127.0.0.1:{port}",
        "--otlp-protocol",
        "http",
        "--timeout",
        "2",
    )

    assert "line 2" in lenient.stderr
    assert "skipped 1 malformed lines" in lenient.stdout
    assert lenient.returncode == 1  # the closed port lost the spans: said, and exit 1
    assert strict.returncode == 2
    assert "traces.jsonl:2:" in strict.stderr
    assert "Traceback" not in lenient.stderr + strict.stderr


def test_missing_file_and_missing_sink_exit_2(tmp_path: Path) -> None:
    missing = _replay(str(tmp_path / "nope.jsonl"), "--otlp-endpoint", "http://127.0.0.1:4317")
    no_sink = _replay(str(tmp_path / "nope.jsonl"))

    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr
    assert no_sink.returncode == 2 and "no sink configured" in no_sink.stderr


def _closed() -> int:
    from tests.backends.otlp_recorder import closed_port

    return closed_port()

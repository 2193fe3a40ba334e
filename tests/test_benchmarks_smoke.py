"""The benchmark harness still runs: its quick mode prints every figure with sane numbers.

A smoke test of `python -m benchmarks`, not a timing assertion: the figures themselves are
judged in BENCHMARKS.md, on a quiet machine, never here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A phrase from the figure column of each row the issue asks for (and the two reported
# without a goal), so that a figure silently dropped from the table fails the test.
EXPECTED = {
    "turn": ["turn span (5 attributes)"],
    "nested": ["session > turn > round", "sampled out"],
    "unconfigured": ["unconfigured turn", "unconfigured session"],
    "sink_down": ["sink is down (queue full)", "closed port"],
    "export_cpu": ["OTLP + Sentry / OTLP alone", "OTLP mode"],
    "sentry_cpu": ["SentrySpanProcessor"],
    "flush_deadline": [
        f"{call}(0.5 s), {sink} never answers"
        for sink in ("OTLP/gRPC", "OTLP/HTTP", "Sentry envelopes", "Sentry OTLP")
        for call in ("force_flush", "shutdown")
    ],
    "outage_memory": ["RSS growth during a 4 s outage"],
    "sustained": ["sustained spans/s"],
    "report": ["report text", "report --json"],
}


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "rows.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result, json.loads(out.read_text())


def _assert_sane(row: dict[str, Any]) -> None:
    value = row["value"]
    assert math.isfinite(value), row
    if row["unit"] == "x":
        # A paired ratio outside this range means a variant measured nothing (or hung).
        assert 0.001 < value < 1000, row
        assert row["low"] <= value <= row["high"], row
        assert len(row["extra"]["ratios"]) >= 2, row
    else:
        assert value >= 0, row
    if row["goal"] is not None:
        assert row["met"] in (True, False), row


@pytest.mark.integration
@pytest.mark.slow
def test_quick_mode_prints_every_figure_with_sane_numbers(tmp_path: Path) -> None:
    result, payload = _run(tmp_path)

    rows = payload["rows"]
    assert payload["quick"] is True
    assert not [r["figure"] for r in rows if "FAILED" in r["figure"]], result.stderr[-4000:]
    for key, phrases in EXPECTED.items():
        figures = [r["figure"] for r in rows if r["key"] == key]
        for phrase in phrases:
            assert any(phrase in figure for figure in figures), (key, phrase, figures)
    for row in rows:
        _assert_sane(row)
        # The printed table carries the same rows as the JSON.
        assert row["figure"] in result.stdout
    machine = payload["machine"]
    assert machine["nproc"] >= 1 and machine["cpu"] and machine["python"]


@pytest.mark.integration
@pytest.mark.slow
def test_quick_fastapi_figures_run_real_servers(tmp_path: Path) -> None:
    _, payload = _run(tmp_path, "--only", "fastapi")

    rows = payload["rows"]
    figures = [r["figure"] for r in rows]
    assert any("throughput" in f for f in figures), figures
    assert any("p99 latency" in f for f in figures), figures
    for row in rows:
        _assert_sane(row)

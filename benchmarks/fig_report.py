"""`agent-trace report` on a trace file of 200,000 spans (20,000 in the quick run): wall time
and peak resident memory of the command, run as a process of its own.

The file is written by agent-trace's own local file sink from small reviews (7 spans each),
so it has the shape the command meets in use.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import agent_trace
from benchmarks import _fixtures as fx
from benchmarks._harness import Row, Settings


def _write_trace_file(path: Path, spans: int) -> int:
    agent_trace.configure(
        "bench", local_path=path, max_queue_size=1_000_000, max_export_batch_size=4096, _env={}
    )
    reviews = -(-spans // fx.REVIEW_SPANS)
    # In slices, flushing between them: the file sink keeps up and nothing is dropped.
    for start in range(0, reviews, 5000):
        fx.agent_trace_review(min(5000, reviews - start))
        agent_trace.force_flush(timeout_s=60.0)
    agent_trace.shutdown(timeout_s=60.0)
    lost = sum(agent_trace.dropped_spans().values())
    if lost:
        raise RuntimeError(f"{lost} spans were dropped while writing the trace file")
    return reviews * fx.REVIEW_SPANS


# Runs the command and writes its peak RSS (kB) to the file named first. The kernel's
# `ru_maxrss` of a child also counts the parent's pages it had between fork and exec; VmHWM
# belongs to the address space, which exec replaces, so it is the command's own peak.
_WRAPPER = """
import sys
from agent_trace.cli import main
out = sys.argv.pop(1)
try:
    code = main(sys.argv[1:])
finally:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM"))
    with open(out, "w") as sink:
        sink.write(peak)
sys.exit(code)
"""


def _run_report(path: Path, workdir: Path, *extra: str) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one `agent-trace report` process."""
    peak_file = workdir / "peak_kb"
    command = [sys.executable, "-c", _WRAPPER, str(peak_file), "report", "--file", str(path)]
    started = time.perf_counter()
    result = subprocess.run([*command, *extra], stdout=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - started
    return elapsed, int(peak_file.read_text()) / 1024, result.returncode


def run(settings: Settings) -> list[Row]:
    try:
        from agent_trace.cli import report  # noqa: F401 - only whether the command exists
    except ImportError:
        return [
            Row(
                figure="agent-trace report", value=float("nan"), unit="", detail="no report command"
            )
        ]
    target = 20_000 if settings.quick else 200_000
    rows = []
    with tempfile.TemporaryDirectory(prefix="agent-trace-report-") as tmp:
        path = Path(tmp) / "traces.jsonl"
        started = time.perf_counter()
        spans = _write_trace_file(path, target)
        written_s = time.perf_counter() - started
        size_mb = path.stat().st_size / 1024 / 1024
        # What the interpreter and the command's imports take before reading any span.
        _, idle_mb, _ = _run_report(path, Path(tmp), "--help")
        for label, extra in (("text", ()), ("--json", ("--json",))):
            elapsed, peak_mb, code = _run_report(path, Path(tmp), *extra)
            rows.append(
                Row(
                    figure=f"agent-trace report {label}, {spans:,} spans: time",
                    value=elapsed,
                    unit="s",
                    detail=f"exit {code}; {size_mb:.0f} MB file written in {written_s:.1f} s",
                )
            )
            rows.append(
                Row(
                    figure=f"agent-trace report {label}, {spans:,} spans: peak RSS",
                    value=peak_mb,
                    unit="MB",
                    detail=f"exit {code}; `report --help` alone peaks at {idle_mb:.1f} MB",
                )
            )
    return rows

"""`python -m benchmarks [--quick] [--fastapi] [--only NAME ...] [--json FILE]`.

Each figure runs in a fresh interpreter of its own: figures install different global state
(OpenTelemetry's provider, sentry-sdk's client, agent-trace's pipeline), and a figure that
measures memory must not inherit another's heap. The parent prints one table at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Settings, format_table

# name -> (module, needs the --fastapi flag)
FIGURES: dict[str, tuple[str, bool]] = {
    "turn": ("benchmarks.fig_turn", False),
    "nested": ("benchmarks.fig_nested", False),
    "unconfigured": ("benchmarks.fig_unconfigured", False),
    "sink_down": ("benchmarks.fig_sink_down", False),
    "export_cpu": ("benchmarks.fig_export_cpu", False),
    "sentry_cpu": ("benchmarks.fig_sentry_cpu", False),
    "fastapi": ("benchmarks.fig_fastapi", True),
    "flush_deadline": ("benchmarks.fig_flush_deadline", False),
    "outage_memory": ("benchmarks.fig_outage_memory", False),
    "sustained": ("benchmarks.fig_sustained", False),
    "report": ("benchmarks.fig_report", False),
}

_TIMEOUT_S = 1800


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds, short runs")
    parser.add_argument(
        "--fastapi", action="store_true", help="also run the FastAPI figures (uvicorn processes)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=sorted(FIGURES), metavar="NAME", help="run these figures"
    )
    parser.add_argument("--rounds", type=int, help="measured rounds per paired figure")
    parser.add_argument(
        "--verbose", action="store_true", help="let the figures' processes log their warnings"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--worker", choices=sorted(FIGURES), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _run_worker(args: argparse.Namespace) -> int:
    if not args.verbose:
        # The figures provoke refused connections and full queues on purpose; the warnings
        # agent-trace and the exporters log about them would bury the table.
        logging.getLogger().addHandler(logging.NullHandler())
    module = importlib.import_module(FIGURES[args.worker][0])
    settings = Settings.for_mode(args.quick, args.rounds)
    rows: list[Row] = module.run(settings)
    args.out.write_text(json.dumps([row.to_json() for row in rows]))
    return 0


def _run_figure(name: str, args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="agent-trace-bench-") as tmp:
        out = Path(tmp) / "rows.json"
        command = [sys.executable, "-m", "benchmarks", "--worker", name, "--out", str(out)]
        if args.quick:
            command.append("--quick")
        if args.rounds:
            command += ["--rounds", str(args.rounds)]
        if args.verbose:
            command.append("--verbose")
        # The figures configure their sinks themselves: nothing from the caller's environment
        # may add a sink or change a default behind their back.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
        env = {k: v for k, v in env.items() if not k.startswith("AGENT_TRACE_")}
        if not args.verbose:
            env["GRPC_VERBOSITY"] = "NONE"
        # The checkout last: a PYTHONPATH given by the caller (another version of agent_trace
        # to compare with, see BENCHMARKS.md) comes first.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(_ROOT)]))
        started = time.monotonic()
        result = subprocess.run(command, env=env, cwd=tmp, timeout=_TIMEOUT_S, check=False)
        elapsed = time.monotonic() - started
        if result.returncode != 0 or not out.exists():
            return [
                Row(
                    key=name,
                    figure=f"{name}: FAILED (exit {result.returncode})",
                    value=float("nan"),
                    unit="",
                    met=False,
                    detail="see the error output above",
                )
            ]
        rows = [Row(**{**raw, "key": name}) for raw in json.loads(out.read_text())]
        print(f"[{name}] done in {elapsed:.1f} s", file=sys.stderr, flush=True)
        return rows


_ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """Where the figures come from: cores, CPU model, Python and library versions, date."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("agent-trace", "opentelemetry-sdk", "sentry-sdk", "fastapi", "uvicorn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        return _run_worker(args)
    if args.only:
        names = list(args.only)
    else:
        names = [name for name, (_, optional) in FIGURES.items() if args.fastapi or not optional]
    rows: list[Row] = []
    for name in names:
        rows.extend(_run_figure(name, args))
    info = machine()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    print()
    print(
        f"{'quick smoke run' if args.quick else 'full run'} on {info['nproc']} cores, "
        f"{info['cpu']}, Python {info['python']}, {versions}, {info['date']}"
    )
    print()
    print(format_table(rows))
    if args.json is not None:
        payload = {"machine": info, "quick": args.quick, "rows": [r.to_json() for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

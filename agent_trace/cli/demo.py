"""`agent-trace demo`: run the governance-review coordinator, traced, and summarise it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import agent_trace
from agent_trace._config import ConfigurationError
from agent_trace.cli._common import add_sink_options, config_error, describe_sinks, sink_kwargs


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the governance-review coordinator on sample proposals, traced",
        description="Run the example coordinator (ethics, legal and operations reviewers) on "
        "a proposals file, traced to the configured sinks (the local file when none is set).",
    )
    parser.add_argument("--proposals", type=Path, help="proposals JSON file (default: bundled)")
    parser.add_argument("--constitution", type=Path, help="constitution text (default: bundled)")
    parser.add_argument("--concurrency", type=int, default=8, help="sessions at once (default 8)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--local-path", type=Path, help="trace file when no remote sink is set")
    parser.add_argument("--sample-rate", type=float, help="share of sessions traced (0..1)")
    add_sink_options(parser)


def load_example() -> ModuleType:
    """The coordinator: bundled in the wheel, or `examples/` of a source checkout."""
    try:
        return importlib.import_module("agent_trace._demo.governance_review")
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[2]
    if (root / "examples" / "governance_review").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("examples.governance_review")


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        print("agent-trace demo: --concurrency must be at least 1", file=sys.stderr)
        return 2
    for option, path in (("--proposals", args.proposals), ("--constitution", args.constitution)):
        if path is not None and not path.is_file():
            print(f"agent-trace demo: {option} {path}: no such file", file=sys.stderr)
            return 2
    example = load_example()
    try:
        constitution = example.load_constitution(args.constitution, expected_hash=_expected_hash())
        proposals = example.load_proposals(args.proposals)
    except ValueError as exc:
        print(f"agent-trace demo: {exc}", file=sys.stderr)
        return 2

    try:
        settings = agent_trace.configure(
            args.service_name or os.environ.get("OTEL_SERVICE_NAME") or "governance-review",
            constitution_hash=constitution.hash,
            local_path=args.local_path,
            sample_rate=args.sample_rate,
            **sink_kwargs(args),
        )
    except ConfigurationError as exc:
        return config_error(exc)

    summary = asyncio.run(
        example.run(
            args.proposals,
            concurrency=args.concurrency,
            seed=args.seed,
            constitution_path=args.constitution,
        )
    )
    delivered = agent_trace.shutdown(timeout_s=10.0)
    print(summary.format())
    print(f"constitution {constitution.hash}, {len(proposals)} proposals")
    print("traces went to:")
    for line in describe_sinks(settings):
        print(f"  {line}")
    drops = agent_trace.dropped_spans()
    if drops or not delivered:
        lost = ", ".join(f"{sink}/{reason}: {n}" for (sink, reason), n in sorted(drops.items()))
        print(f"warning: not every span was delivered ({lost or 'flush timed out'})")
        return 1
    if settings.local_path is not None:
        print(f"next: agent-trace report --file {settings.local_path}  |  agent-trace show --last")
    return 0


def _expected_hash() -> str | None:
    value = os.environ.get("CONSTITUTIONAL_HASH", "").strip()
    return value or None

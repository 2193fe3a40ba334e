"""`python -m examples.governance_review`: review the bundled proposals, traced.

Traces go where agent-trace's environment points them (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`SENTRY_DSN`), or to `.agent-trace/traces.jsonl` when nothing is set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import agent_trace

from . import load_constitution, load_proposals, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.governance_review")
    parser.add_argument("--proposals", type=Path, help="proposals JSON (default: bundled)")
    parser.add_argument("--constitution", type=Path, help="constitution text (default: bundled)")
    parser.add_argument("--concurrency", type=int, default=8, help="sessions at once")
    parser.add_argument("--seed", type=int, default=7, help="seeds the reviewers' latencies")
    args = parser.parse_args(argv)

    try:
        # A hash set in the environment must match the file; otherwise the file's own hash is
        # the one the traces carry.
        constitution = load_constitution(
            args.constitution, expected_hash=os.environ.get("CONSTITUTIONAL_HASH") or None
        )
        load_proposals(args.proposals)  # fail on a malformed file before tracing starts
    except (OSError, ValueError) as exc:
        print(f"governance_review: {exc}", file=sys.stderr)
        return 2

    agent_trace.configure("governance-review", constitution_hash=constitution.hash)
    summary = asyncio.run(
        run(
            args.proposals,
            concurrency=args.concurrency,
            seed=args.seed,
            constitution_path=args.constitution,
        )
    )
    delivered = agent_trace.shutdown(timeout_s=10.0)
    print(summary.format())
    print(f"constitution {constitution.hash}; traces delivered: {'yes' if delivered else 'no'}")
    return 0 if delivered else 1


if __name__ == "__main__":
    sys.exit(main())

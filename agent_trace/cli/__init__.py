"""The `agent-trace` command line: one module per command, each with `add_parser` and `run`.

Exit codes, for every command: 0 success, 1 the command ran but found a failure (no such
trace, a sink that did not answer), 2 usage errors and unreadable or malformed input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent_trace.cli._common import tolerate_unencodable

__all__ = ["main"]

_COMMANDS = ("demo", "show", "report", "replay", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-trace",
        description="Trace multi-agent coordination: run the demo, read trace files, "
        "replay them to Jaeger or Sentry, check a setup.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log agent-trace's decisions")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        module = importlib.import_module(f"agent_trace.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(f"agent_trace.cli.{args.command}")
    tolerate_unencodable(sys.stdout, sys.stderr)
    try:
        code: int = module.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

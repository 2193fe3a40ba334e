"""A coordinator that exits without shutdown() where exit handlers cannot start threads.

Since Python 3.12, a function registered with `atexit` that starts a thread gets a
RuntimeError. This script reproduces that on any version: an exit handler registered after
agent-trace's (so it runs first) makes every later `Thread.start()` raise the same error.
Run by test_exit_threads.py with the path of the local trace file.
"""

from __future__ import annotations

import atexit
import sys
import threading
from typing import Any

import agent_trace


def forbid_new_threads() -> None:
    def start(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    threading.Thread.start = start  # type: ignore[method-assign]


def main(path: str) -> None:
    agent_trace.configure("exit-test", local_path=path, schedule_delay_s=30)
    atexit.register(forbid_new_threads)
    with agent_trace.session("review") as s, s.turn("ethics"):
        pass


if __name__ == "__main__":
    main(sys.argv[1])

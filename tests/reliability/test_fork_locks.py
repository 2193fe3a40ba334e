"""A fork while another thread holds one of agent-trace's locks leaves the child working.

A lock held by some thread at `os.fork()` is held forever in the child, where that thread does
not exist. During an outage the export threads count drops all the time, so a coordinator that
forks its workers then would get workers that hang at their first drop or reconfiguration.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

import agent_trace
from agent_trace import _runtime
from agent_trace.testing import capture_spans


def held_by_another_thread(lock: AbstractContextManager[object]) -> Callable[[], None]:
    """Hold `lock` in a thread until the returned function is called."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)

    def let_go() -> None:
        release.set()
        thread.join(10)

    return let_go


def child_exit_code(pid: int, patience_s: float = 30.0) -> int:
    """The child's exit code; a child that does not exit in time is killed and fails the test."""
    deadline = time.monotonic() + patience_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on a lock held at the fork")
        time.sleep(0.05)


@pytest.mark.parametrize("which", ["drop counter", "runtime"])
def test_a_lock_held_at_fork_does_not_hang_the_child(which: str) -> None:
    with capture_spans():
        lock = _runtime._drops._lock if which == "drop counter" else _runtime._lock
        let_go = held_by_another_thread(lock)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child reports through its exit code
                code = 1
                try:
                    _runtime._drops.add("probe", "after_fork")
                    _runtime.uninstall(_runtime.current())  # takes the runtime's lock
                    seen = agent_trace.dropped_spans().get(("probe", "after_fork"))
                    code = 0 if seen == 1 else 2
                finally:
                    os._exit(code)
        finally:
            let_go()
        assert child_exit_code(pid) == 0

"""A coordinator that forks an agent worker while Sentry is not answering; run by test_fork.py.

The coordinator's transactions are still in sentry-sdk's transport when it forks (the first
posted and waiting for an answer, the second queued). The worker must send its own
transaction, and never the coordinator's a second time.
"""

from __future__ import annotations

import os

import agent_trace


def main() -> None:
    agent_trace.configure("sentry-fork-test", alert_policy=False, local_file=False)
    for name in ("coordinator-first", "coordinator-second"):
        with agent_trace.session(name):
            pass
    # Hands both to the transport, which posts the first and waits for Sentry forever.
    assert agent_trace.force_flush(timeout_s=1.0) is False

    pid = os.fork()
    if pid == 0:
        with agent_trace.session("worker"):
            pass
        agent_trace.force_flush(timeout_s=1.0)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


if __name__ == "__main__":
    main()

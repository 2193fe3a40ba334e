"""A coordinator that forks an agent worker while talking to Sentry; run by test_fork.py.

`silent`: Sentry accepts and never answers. The coordinator's transactions are still in
sentry-sdk's transport when it forks (the first posted and waiting for an answer, the second
queued); the worker must send its own transaction, and never the coordinator's a second time.

`answering`: Sentry answers. The coordinator's transport holds a kept-alive connection when it
forks; the worker must use connections of its own and leave no copy of the parent's unclosed.
"""

from __future__ import annotations

import os
import sys

import agent_trace


def main(mode: str) -> None:
    agent_trace.configure("sentry-fork-test", alert_policy=False, local_file=False)
    for name in ("coordinator-first", "coordinator-second"):
        with agent_trace.session(name):
            pass
    # Hands both to the transport; a silent Sentry keeps the first waiting forever.
    assert agent_trace.force_flush(timeout_s=1.0 if mode == "silent" else 10.0) is (
        mode == "answering"
    )

    pid = os.fork()
    if pid == 0:
        with agent_trace.session("worker"):
            pass
        delivered = agent_trace.force_flush(timeout_s=1.0 if mode == "silent" else 10.0)
        if mode == "silent":
            os._exit(0)
        sys.exit(0 if delivered else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    with agent_trace.session("coordinator-last"):
        pass
    if mode == "answering":
        assert agent_trace.force_flush(timeout_s=10.0) is True


if __name__ == "__main__":
    main(sys.argv[1])

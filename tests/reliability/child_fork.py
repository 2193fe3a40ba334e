"""A coordinator that starts agent workers with os.fork and multiprocessing; run by test_fork.py.

Prints the session's trace id and span id, then one line per worker with its pid.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

import agent_trace


def work(agent: str) -> int:
    with agent_trace.turn(agent), agent_trace.policy_check("privacy") as check:
        check.passed()
    return os.getpid()


def fork_workers(count: int, exit_how: str) -> list[int]:
    pids = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            work(f"forked-{index}")
            if exit_how == "os._exit":
                # os._exit skips every exit handler: the worker flushes first, as documented.
                agent_trace.force_flush(timeout_s=5)
                os._exit(0)
            sys.exit(0)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    return pids


def main(mode: str) -> None:
    agent_trace.configure("fork-test")
    ctx = multiprocessing.get_context("fork")
    with agent_trace.session("review", session_id=f"fork-{mode}") as s:
        with s.turn("coordinator"), s.policy_check("intake"):
            pass
        # Let the export thread hand the finished spans to the sinks before forking, so a
        # child inherits sinks that already hold some of the parent's spans.
        time.sleep(0.6)
        if mode == "os.fork":
            fork_workers(2, "sys.exit")
            fork_workers(1, "os._exit")
        elif mode == "process":
            workers = [ctx.Process(target=work, args=(f"process-{i}",)) for i in range(2)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
                assert worker.exitcode == 0
        elif mode == "pool":
            pool = ctx.Pool(2)
            pool.map(work, [f"pool-{i}" for i in range(4)])
            pool.close()
            pool.join()
        span_id = s.span_id
        print(s.trace_id, span_id, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

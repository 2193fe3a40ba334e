"""Exit without shutdown() where exit handlers may not start threads (Python 3.12 and later).

agent-trace flushes at interpreter exit from an `atexit` handler. From Python 3.12 on, such a
handler gets a RuntimeError when it starts a thread, and the flush at exit must still deliver
every finished span, with no internal error, using only the threads already running.
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability._support import HERE, assert_quiet_exit, file_spans, run_child


def test_exit_without_shutdown_delivers_spans_when_threads_cannot_start(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"

    result = run_child(HERE / "child_exit_no_threads.py", str(path))

    assert_quiet_exit(result)
    assert sorted(s.name for s in file_spans(path)) == [
        "invoke_agent ethics",
        "invoke_workflow review",
    ]

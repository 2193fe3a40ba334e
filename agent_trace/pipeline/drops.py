"""Counts of spans that did not reach a sink, per sink and reason."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["AFTER_SHUTDOWN", "EXPORT_FAILED", "QUEUE_FULL", "SHUTDOWN_TIMEOUT", "DropCounter"]

QUEUE_FULL = "queue_full"
EXPORT_FAILED = "export_failed"
AFTER_SHUTDOWN = "after_shutdown"
SHUTDOWN_TIMEOUT = "shutdown_timeout"


class DropCounter:
    """Thread-safe tally of dropped spans; read by `agent_trace.dropped_spans()` and metrics."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, sink: str, reason: str, count: int = 1) -> None:
        if count <= 0:
            return
        with self._lock:
            self._counts[(sink, reason)] += count

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

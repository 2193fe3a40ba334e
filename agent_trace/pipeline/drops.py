"""Counts of spans that did not reach a sink, per sink and reason."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = [
    "AFTER_SHUTDOWN",
    "EXPORT_FAILED",
    "QUEUE_FULL",
    "SHUTDOWN_TIMEOUT",
    "DropCell",
    "DropCounter",
]

QUEUE_FULL = "queue_full"
EXPORT_FAILED = "export_failed"
AFTER_SHUTDOWN = "after_shutdown"
SHUTDOWN_TIMEOUT = "shutdown_timeout"


class DropCell:
    """One hot drop count, kept by its owner under the owner's lock and read by the counter.

    A queue that is full drops on the application's thread, once per span; a plain integer
    bumped under the worker's own lock costs a fraction of a shared counter's dictionary
    update. The counter folds every cell into its totals when it is read.
    """

    __slots__ = ("count", "key")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.count = 0


class DropCounter:
    """Thread-safe tally of dropped spans; read by `agent_trace.dropped_spans()` and metrics."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        # Cells live as long as the counter: a replaced pipeline's drops stay counted.
        self._cells: list[DropCell] = []
        self._lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        """A new lock in a forked child: one a parent thread held at the fork stays held."""
        self._lock = threading.Lock()

    def add(self, sink: str, reason: str, count: int = 1) -> None:
        if count <= 0:
            return
        with self._lock:
            self._counts[(sink, reason)] += count

    def cell(self, sink: str, reason: str) -> DropCell:
        """A count for one sink and reason that its owner bumps itself (see `DropCell`)."""
        cell = DropCell((sink, reason))
        with self._lock:
            self._cells.append(cell)
        return cell

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            counts = Counter(self._counts)
            cells = list(self._cells)
        # An int read is atomic: a cell read while its owner bumps it is one drop behind at
        # most, and that drop shows in the next snapshot.
        for cell in cells:
            if cell.count:
                counts[cell.key] += cell.count
        return dict(counts)

    def total(self) -> int:
        return sum(self.snapshot().values())

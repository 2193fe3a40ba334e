"""An in-memory sink for tests: receives exactly what the remote sinks would, synchronously."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps every span it is given. `synchronous` makes the pipeline call it in `on_end`."""

    name = "memory"
    synchronous = True

    def __init__(self) -> None:
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        with self._lock:
            self._spans.extend(spans)
        return True

    @property
    def spans(self) -> list[ReadableSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None

    def describe(self) -> str:
        return "memory"

"""The embedded default sink: OTLP/JSON export requests appended to a file, one per line."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan

from agent_trace.pipeline.sinks.otlp_json import encode_request

__all__ = ["LocalFileSink"]


class LocalFileSink:
    """Appends each batch as one line, in one `write` on an `O_APPEND` descriptor.

    One write per line keeps lines whole when forked workers append to the same file.
    """

    name = "local_file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        line = json.dumps(encode_request(spans), separators=(",", ":"), allow_nan=False)
        data = (line + "\n").encode("utf-8")
        with self._lock:
            fd = self._open()
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        return True

    def flush(self, timeout_s: float) -> bool:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
        return True

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def describe(self) -> str:
        return str(self.path)

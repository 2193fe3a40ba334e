"""The export process: runs the network sinks for one application process.

Started by `ExportProcessSink` with the application's interpreter and `sys.path`. It reads a
pickled configuration, then frames (`wire`) from its standard input (a socket), and answers
on a pipe of its own, never on its standard output, where anything it imports may print:
`ready` once its sinks are built (or `failed`), `stats` whenever its counts change, its log
records, and a `reply` to each flush and shutdown. Its standard output and error are the
application's standard error.

It ignores SIGINT and SIGTERM, which a terminal or a supervisor sends to the whole process
group: it leaves when its standard input closes (the application shut the pipeline down, or
exited, or was killed), after sending what it holds within the exit timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from typing import Any

from agent_trace.pipeline.drops import DropCounter
from agent_trace.pipeline.offload.wire import FrameReader, SpanDecoder, frame, write_all
from agent_trace.pipeline.processor import flush_all, shutdown_all

__all__ = ["main"]

_log = logging.getLogger("agent_trace.export_process")

# Counts are sent at most this often while they change (and always before a reply).
_STATS_INTERVAL_S = 0.25
UNDECODABLE = "undecodable"
# Added to the application's niceness where the idle scheduling class is not available.
_NICENESS = 19


class _Channel:
    """The export process's answers; one writer at a time."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.broken = False

    def send(self, message: tuple[Any, ...]) -> None:
        data = frame(message)
        with self._lock:
            if self.broken:
                return
            try:
                write_all(self._fd, data)
            except OSError:
                # The application is gone: nobody reads counts any more.
                self.broken = True


class _Exporter:
    def __init__(self, config: dict[str, Any], channel: _Channel) -> None:
        from opentelemetry.sdk.resources import Resource

        from agent_trace.pipeline.sinks.build import remote_sinks, workers_for

        settings = config["settings"]
        self.settings = settings
        self.channel = channel
        self.drops = DropCounter()
        self.sinks = remote_sinks(settings, self.drops)
        # No pacing: no application thread waits for this process's GIL.
        self.workers = workers_for(self.sinks, settings, self.drops, pace=False)
        attributes, schema_url = config["resource"]
        self.decoder = SpanDecoder(Resource(attributes, schema_url))
        self.received = 0
        self._last_stats: Any = None
        self._stats_lock = threading.Lock()

    def take(self, raw: list[Any]) -> None:
        spans = []
        undecodable = 0
        for item in raw:
            try:
                spans.append(self.decoder.span(item))
            except Exception:
                undecodable += 1
        if undecodable:
            for sink in self.sinks:
                self.drops.add(sink.name, UNDECODABLE, undecodable)
        # Under the stats lock: a report counts these spans either as not yet received or as
        # held in the queues, never both (the application counts both as lost if this process
        # dies).
        with self._stats_lock:
            for worker in self.workers:
                for span in spans:
                    worker.enqueue(span)
            self.received += len(raw)

    def stats(self, force: bool = False) -> None:
        with self._stats_lock:
            sinks = {}
            for worker in self.workers:
                sink: Any = worker.sink
                held = worker.queued + worker.in_flight + int(getattr(sink, "held", 0))
                error = worker.last_error
                sinks[sink.name] = (worker.exported, error, held)
            current = (self.received, self.drops.snapshot(), sinks)
            if force or current != self._last_stats:
                self._last_stats = current
                self.channel.send(("stats", *current))

    def flush(self, request: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        ok = flush_all(self.workers, deadline)
        self.stats(force=True)
        self.channel.send(("reply", request, ok))

    def shutdown(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        ok = shutdown_all(self.workers, deadline)
        self.stats(force=True)
        return ok


class _ForwardLogs(logging.Handler):
    """Log records go to the application's process, which logs them under the same logger:
    its logging setup (handlers, levels, filters, log-once rules) applies to them."""

    def __init__(self, channel: _Channel) -> None:
        super().__init__(logging.INFO)
        self._channel = channel
        # Set once the sinks are built: a warning about one of them is logged once a minute
        # by the application's process, across export processes (each new one would repeat it).
        self.sink_names: frozenset[str] = frozenset()

    def _once_key(self, record: logging.LogRecord) -> str | None:
        if record.levelno != logging.WARNING or not record.name.startswith("agent_trace"):
            return None
        args = record.args if isinstance(record.args, tuple) else ()
        sinks = ",".join(a for a in args if isinstance(a, str) and a in self.sink_names)
        return f"{record.name}:{record.msg}:{sinks}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            self._channel.send(
                ("log", record.levelno, record.name, message, self._once_key(record))
            )
        except Exception:
            self.handleError(record)


def _stats_loop(exporter: _Exporter, stop: threading.Event) -> None:
    while not stop.wait(_STATS_INTERVAL_S):
        try:
            exporter.stats()
        except Exception:
            _log.debug("stats failed", exc_info=True)


def _lower_priority() -> None:
    """Background work: this process runs on cores nothing else wants at the moment.

    Linux's idle scheduling class gives a core to any other thread that wakes up, at once: an
    application thread never waits behind an export. With it, a FastAPI service's p99 at one
    connection was at the uninstrumented one's (0.97x); niced by 10 it was 1.22x, by 19
    1.09x, on a two-core machine (BENCHMARKS.md). A machine kept busy leaves this process
    little time: its queues fill and the spans they drop are counted, the application is not
    slowed. Elsewhere the process is niced instead.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    with contextlib.suppress(OSError):
        os.nice(_NICENESS)


def main(frames_out: int) -> int:
    """Read frames from standard input (the application's socket) until it closes; answer on
    the descriptor `frames_out` (see `parent._BOOT`)."""
    # The frames get a descriptor of their own; 0 becomes harmless for everything else.
    frames_in = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _lower_priority()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = _Channel(frames_out)
    root = logging.getLogger()
    forward = _ForwardLogs(channel)
    root.addHandler(forward)
    root.setLevel(logging.INFO)
    reader = FrameReader(os.fdopen(frames_in, "rb", buffering=1 << 20))
    first = reader.next()
    if first is None or first[0] != "config":
        return 2
    try:
        exporter = _Exporter(pickle.loads(first[1]), channel)
    except Exception as exc:
        channel.send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1
    forward.sink_names = frozenset(s.name for s in exporter.sinks)
    channel.send(("ready", os.getpid(), {s.name: s.describe() for s in exporter.sinks}))
    stop = threading.Event()
    threading.Thread(
        target=_stats_loop, args=(exporter, stop), name="agent-trace-stats", daemon=True
    ).start()
    timeout_s = exporter.settings.exit_timeout_s
    while True:
        try:
            message = reader.next()
        except Exception:
            _log.warning("a broken frame from the application; stopping", exc_info=True)
            message = None
        if message is None:
            # The application is gone, or closed the pipeline without waiting: send what is
            # held within the exit timeout.
            exporter.shutdown(timeout_s)
            break
        kind = message[0]
        if kind == "spans":
            exporter.take(message[1])
        elif kind == "flush":
            # On a thread of its own: spans keep arriving while the sinks flush.
            threading.Thread(
                target=exporter.flush, args=message[1:3], name="agent-trace-flush", daemon=True
            ).start()
        elif kind == "shutdown":
            ok = exporter.shutdown(float(message[2]))
            channel.send(("reply", message[1], ok))
            break
    stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))

"""The application's side of the export process: one sink standing for all the network sinks.

Encoding spans as OTLP protobuf and Sentry JSON is pure Python. On the application's export
threads it holds the GIL the application needs: a FastAPI service's single-connection p99 was
1.5 times the uninstrumented one's with both sinks on, though the export threads used only 7 %
of the process's time (BENCHMARKS.md). So the network sinks run in a process of their own,
started with the application's interpreter in the idle scheduling class (`child`); the
application's export thread turns each batch into flat tuples and writes them to a socket, a
tenth of the encoding's cost.

Nothing is lost silently on the way. The export process reports its sinks' drops, deliveries
and errors; they are counted here under the sinks' own names, as if the sinks ran in this
process. If it cannot start, or exits, the sinks are built here instead and the spans it had
not yet sent are counted as `export_process_exited`: tracing goes on, in-process.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from agent_trace._config import Settings
from agent_trace._fork import reset_in_forked_child
from agent_trace._log import warn_once
from agent_trace.pipeline.drops import SHUTDOWN_TIMEOUT, DropCounter
from agent_trace.pipeline.offload.wire import (
    MAX_FRAME,
    FdStream,
    FrameReader,
    SpanEncoder,
    encode_spans,
    frame,
    resource_tuple,
)
from agent_trace.pipeline.processor import flush_all, shutdown_all

__all__ = ["EXPORT_PROCESS_EXITED", "UNSERIALIZABLE", "ExportProcessSink"]

_log = logging.getLogger(__name__)

EXPORT_PROCESS_EXITED = "export_process_exited"
UNSERIALIZABLE = "unserializable"

# How long the first export waits for the export process to build its sinks.
STARTUP_TIMEOUT_S = 20.0
# A larger buffer lets a burst of spans wait in the kernel rather than in the queue.
_BUFFER_BYTES = 1024 * 1024
# The spans go down a socket, not a pipe: a send to a process that died raises an error even
# where the application restored SIGPIPE's default action, which would end it.
_NO_SIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)

# Run in the export process: the application's `sys.path` (given as an argument) first, so
# that it imports the same agent-trace and dependencies; `-I` keeps the working directory and
# PYTHON* variables out of it. Its answers go down a pipe of their own (its descriptor is the
# second argument), never its standard output, where a module it imports may print.
_BOOT = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "from agent_trace.pipeline.offload.child import main; sys.exit(main(int(sys.argv[2])))"
)


# Settings that may carry a secret: the export process gets them resolved, down its socket. An
# application may have put them in its environment at run time (python-dotenv, a secret
# manager), where `/proc/<pid>/environ` of the export process would show them.
_SECRET_VARIABLES = frozenset(
    {"SENTRY_DSN", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"}
)


def _child_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.upper() not in _SECRET_VARIABLES}


def _child_output(*ours: int) -> int:
    """Where the export process's standard output and error go: the application's standard
    error, unless it has none. One it closed (`2>&-`) is taken by the next descriptor opened,
    here one of the frames' own, and what the export process wrote there would go down it."""
    try:
        os.fstat(2)
    except OSError:
        return subprocess.DEVNULL
    return subprocess.DEVNULL if 2 in ours else 2


class _PlainPickler(pickle.Pickler):
    """Pickles subclasses of str, int and float as the built-ins themselves: the export process
    cannot import a class the application defined in `__main__` or in a function (a header
    name given as a local `str` subclass), and must not import the application's modules."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return str, (str.__str__(obj),)
        if isinstance(obj, float):
            return float, (float.__float__(obj),)
        if isinstance(obj, int) and not isinstance(obj, bool):
            return int, (int.__int__(obj),)
        return NotImplemented


def _pickled(config: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    _PlainPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(config)
    return buffer.getvalue()


class _InProcess:
    """The network sinks run here, each from its own queue, when the export process cannot."""

    def __init__(self, settings: Settings, drops: DropCounter) -> None:
        from agent_trace.pipeline.sinks.build import remote_sinks, workers_for

        self.workers = workers_for(remote_sinks(settings, drops), settings, drops)

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        for worker in self.workers:
            for span in spans:
                worker.enqueue(span)
        return True

    def flush(self, deadline: float) -> bool:
        return flush_all(self.workers, deadline)

    def shutdown(self, deadline: float) -> bool:
        return shutdown_all(self.workers, deadline)


class ExportProcessSink:
    """The network sinks (`names`), run in a process of their own; see the module's notes."""

    counts_own_drops = True

    def __init__(
        self, settings: Settings, drops: DropCounter, resource: Resource, names: Sequence[str]
    ) -> None:
        self.drop_names = tuple(names)
        self.name = "+".join(self.drop_names)
        self._settings = settings
        self._drops = drops
        self._resource = resource
        self._encoder = SpanEncoder(resource)
        self.last_error: str | None = None
        self._closed = False
        self._closing = False
        self._fallback: _InProcess | None = None
        self._fallback_lock = threading.Lock()
        self._fallback_closed = False
        self._start_lock = threading.Lock()
        self._unstarted = False
        self._start()
        reset_in_forked_child(self, ExportProcessSink._after_fork)

    # -- the export process -------------------------------------------------------------------

    def _start(self) -> None:
        self._write_lock = threading.Lock()
        self._ready = threading.Event()
        self._failure: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._pid = 0
        self._descriptions: dict[str, str] = {}
        self._statuses: dict[str, str | None] = {}
        self._reported: dict[tuple[str, str], int] = {}
        self._held: dict[str, int] = {}
        self._sent = 0
        self._received = 0
        # Spans inside `export` not yet written, and whether a shutdown that got no answer
        # counted everything unconfirmed as lost (see `_write_off`); under `_count_lock`.
        self._count_lock = threading.Lock()
        self._exporting = 0
        self._written_off = False
        self._shutdown_answered = False
        self._replies: dict[int, list[Any]] = {}
        self._next_request = 0
        self.process_exits = 0
        self.exit_code: int | None = None
        self._generation = getattr(self, "_generation", 0) + 1
        if getattr(sys, "frozen", False):
            # A frozen application's executable is the application, not an interpreter.
            self._failure = "cannot run in a frozen application (sys.frozen is set)"
            self._ready.set()
            return
        ours, theirs = socket.socketpair()
        answers, answers_w = os.pipe()
        try:
            with contextlib.suppress(OSError):
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER_BYTES)
                theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER_BYTES)
            config = _pickled(
                {"settings": self._settings, "resource": resource_tuple(self._resource)}
            )
            # Imports ignore entries that are not text (a Path, bytes): so does the process.
            path = [entry for entry in sys.path if isinstance(entry, str)]
            output = _child_output(ours.fileno(), theirs.fileno(), answers, answers_w)
            process = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOT, json.dumps(path), str(answers_w)],
                stdin=theirs.fileno(),
                stdout=output,
                stderr=output,
                pass_fds=(answers_w,),
                close_fds=True,
                env=_child_environment(),
            )
        except Exception as exc:
            ours.close()
            os.close(answers)
            self._failure = f"could not start ({type(exc).__name__}: {exc})"
            self._ready.set()
            return
        finally:
            theirs.close()
            os.close(answers_w)
        self._process = process
        self._socket = ours
        self._answers = answers
        self._write(frame(("config", config)))
        reader = threading.Thread(
            target=self._read,
            args=(process, FrameReader(FdStream(answers)), self._generation),
            name="agent-trace-export-process",
            daemon=True,
        )
        reader.start()

    def _write(self, data: bytes, deadline: float | None = None) -> bool:
        """Send a frame (under `_write_lock`); False if the export process is gone or, with a
        deadline, had no room for it in time (nothing is sent then: a frame goes whole)."""
        sock = self._socket
        if sock is None:
            return False
        try:
            if deadline is not None:
                _, writable, _ = select.select(
                    [], [sock], [], max(0.0, deadline - time.monotonic())
                )
                if not writable:
                    return False
            sock.sendall(data, _NO_SIGNAL)
            return True
        except (OSError, ValueError):
            return False

    def _read(self, process: subprocess.Popen[bytes], reader: FrameReader, generation: int) -> None:
        try:
            while True:
                message = reader.next()
                if message is None:
                    break
                self._take(message)
        except Exception as exc:
            _log.debug("agent-trace: reading the export process failed: %s", exc)
        try:
            code = process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        self.exit_code = code
        if generation == self._generation:  # not the parent's process, seen from a fork
            self._gone(f"exited with code {code}")

    def _take(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "stats":
            received, drops, sinks = message[1:4]
            for key, count in drops.items():
                new = count - self._reported.get(key, 0)
                # After a write-off, what the export process counts late was counted here.
                if new > 0 and not self._written_off:
                    self._drops.add(key[0], key[1], new)
            self._reported = dict(drops)
            self._received = received
            for name, (_, error, held) in sinks.items():
                self._statuses[name] = error
                self._held[name] = held
        elif kind == "log":
            level, name, text, once = message[1:5]
            if once is None:
                logging.getLogger(name).log(level, "%s", text)
            else:
                # Each export process limits its warnings to one a minute; a new one (after
                # configure(), in a forked worker) starts afresh: the limit is kept here.
                warn_once(logging.getLogger(name), f"export_process:{once}", "%s", text)
        elif kind == "reply":
            waiting = self._replies.pop(message[1], None)
            if waiting is not None:
                waiting[1] = bool(message[2])
                waiting[0].set()
        elif kind == "ready":
            self._pid = message[1]
            self._descriptions = dict(message[2])
            self._ready.set()
        elif kind == "failed":
            self._failure = f"could not build its sinks ({message[1]})"
            self._ready.set()

    def _gone(self, why: str) -> None:
        """The export process exited while in use: count what it held, go on in-process."""
        for waiting in list(self._replies.values()):
            waiting[1] = None  # no answer: a shutdown waiting for one counts the losses
            waiting[0].set()
        self._replies.clear()
        if self._closing:
            self._ready.set()
            return
        if self._failure is None:
            self._failure = why
        self.process_exits += 1
        lost_in_pipe = max(0, self._sent - self._received)
        for name in self.drop_names:
            lost = lost_in_pipe + self._held.get(name, 0)
            self._drops.add(name, EXPORT_PROCESS_EXITED, lost)
        self._sent = self._received = 0
        self._held = {}
        self._ready.set()

    def _exit_reason(self) -> str:
        process = self._process
        try:
            code = None if process is None else process.wait(2)
        except subprocess.TimeoutExpired:
            code = None
        return "closed its pipe" if code is None else f"exited with code {code}"

    def _in_process(self) -> _InProcess:
        with self._fallback_lock:
            if self._fallback is None:
                warn_once(
                    _log,
                    f"export_process:{self.name}",
                    "agent-trace: the export process %s; the %s sinks run in this process "
                    "from now on",
                    self._failure,
                    self.name,
                )
                process = self._process
                if process is not None and process.poll() is None:
                    process.kill()
                self._fallback = _InProcess(self._settings, self._drops)
            return self._fallback

    def _after_fork(self) -> None:
        # The parent's pipes and process stay the parent's: a forked child starts its own.
        answers = getattr(self, "_answers", None)
        if answers is not None:
            with contextlib.suppress(OSError):
                os.close(answers)
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
        self._process = None
        self._socket = None
        self._fallback = None
        self._fallback_lock = threading.Lock()
        self._fallback_closed = False
        # Started by the child's first export or flush, not here: a fork handler is no place
        # to start a process, and a child that never traces (a worker pool's) needs none.
        self._start_lock = threading.Lock()
        self._unstarted = not self._closed

    def _started_here(self) -> None:
        """Start the export process of a forked child, once, on its first use."""
        if self._unstarted:
            with self._start_lock:
                if self._unstarted:
                    self._start()
                    self._unstarted = False

    # -- the SpanSink protocol ------------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        with self._count_lock:
            if self._written_off:
                return False
            self._exporting = len(spans)
        try:
            return self._export(spans)
        finally:
            with self._count_lock:
                self._exporting = 0

    def _export(self, spans: Sequence[ReadableSpan]) -> bool:
        self._started_here()
        self._ready.wait(STARTUP_TIMEOUT_S)
        if self._closed and (self._failure is not None or not self._ready.is_set()):
            # Shut down before it could start: nothing is built to send this batch now.
            self._lost_at_shutdown(len(spans))
            return False
        if self._fallback is None and (self._failure is not None or not self._ready.is_set()):
            self._failure = self._failure or f"did not start within {STARTUP_TIMEOUT_S:g} s"
        if self._failure is not None:
            return self._in_process().export(spans)
        data, unserializable = encode_spans(self._encoder, spans)
        if len(data) - 4 > MAX_FRAME:
            # The export process refuses a frame this large as a broken stream, and leaves.
            # 512 spans at the SDK's default limits (128 attributes of 4160 characters) make one.
            if len(spans) > 1:
                half = len(spans) // 2
                first = self._export(spans[:half])
                return self._export(spans[half:]) and first
            for name in self.drop_names:
                self._drops.add(name, UNSERIALIZABLE, 1)
            with self._count_lock:
                self._exporting = max(0, self._exporting - 1)
            return False
        if unserializable:
            for name in self.drop_names:
                self._drops.add(name, UNSERIALIZABLE, unserializable)
        with self._write_lock:
            written = self._write(data)
            if written:
                with self._count_lock:
                    self._sent += len(spans) - unserializable
                    self._exporting = max(0, self._exporting - len(spans))
        if not written and self._closing:
            # The stream was ended by shutdown (or the process left during it): too late to
            # start the sinks here.
            self._lost_at_shutdown(len(spans) - unserializable)
            return False
        if not written:
            # The pipe broke: the reader counts what the process held; this batch goes on here.
            self._failure = self._failure or self._exit_reason()
            return self._in_process().export(spans)
        return not unserializable

    def _lost_at_shutdown(self, count: int) -> None:
        with self._count_lock:
            if self._written_off:
                return  # counted by the shutdown that gave up
            self._exporting = max(0, self._exporting - count)
        for name in self.drop_names:
            self._drops.add(name, SHUTDOWN_TIMEOUT, count)

    def _write_off(self) -> None:
        """A shutdown got no answer by its deadline: what the export process has not confirmed
        (still being written, in the socket, in its queues) is counted as lost now, once."""
        with self._count_lock:
            if self._written_off:
                return
            self._written_off = True
            unconfirmed = self._exporting + max(0, self._sent - self._received)
        for name in self.drop_names:
            self._drops.add(name, SHUTDOWN_TIMEOUT, unconfirmed + self._held.get(name, 0))

    def _ask(self, kind: str, timeout_s: float) -> bool | None:
        """Flush or shut the sinks down; None when the export process did not answer in time."""
        deadline = time.monotonic() + timeout_s
        self._started_here()
        if not self._ready.wait(max(0.0, timeout_s)):
            return None
        if self._failure is not None:
            if kind == "shutdown":
                with self._fallback_lock:
                    fallback, self._fallback_closed = self._fallback, True
                # No sink was ever needed here when none was built: none is built to close.
                return True if fallback is None else fallback.shutdown(deadline)
            return self._in_process().flush(deadline)
        waiting: list[Any] = [threading.Event(), False]
        # The export thread may be in a long send: wait for it no longer than the deadline.
        if not self._write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return None
        try:
            request = self._next_request = self._next_request + 1
            self._replies[request] = waiting
            # The export process keeps a little of the time to report back in.
            budget = max(0.0, deadline - time.monotonic() - 0.05)
            if not self._write(frame((kind, request, budget)), deadline):
                self._replies.pop(request, None)
                return None
        finally:
            self._write_lock.release()
        if not waiting[0].wait(max(0.0, deadline - time.monotonic())) or waiting[1] is None:
            return None
        return bool(waiting[1])

    def flush(self, timeout_s: float) -> bool:
        # The worker's last flush before shutdown is the export process's shutdown: it counts
        # what it could not send in that time, and reports it while this process waits.
        if not self._closing:
            return bool(self._ask("flush", timeout_s))
        answer = self._ask("shutdown", timeout_s)
        if answer is None:
            # Stopped, starved of CPU, or still starting: it did not count its losses for us.
            self._write_off()
        else:
            self._shutdown_answered = True
        return bool(answer)

    def begin_shutdown(self) -> None:
        """Called by the worker as its shutdown starts, before its last flush."""
        self._closing = True

    def shutdown(self) -> None:
        # The worker's last flush shut the sinks down (see `flush`); this ends the stream, and
        # an export process that has not had its shutdown (no flush came) takes the end of the
        # stream as one, with the exit timeout.
        self._closing = self._closed = True
        if not self._shutdown_answered:
            # The worker's last flush gave up before asking (its export call is stuck, waiting
            # for the process to start or for room in the socket): nothing confirmed the rest.
            self._write_off()
        with self._fallback_lock:
            fallback = None if self._fallback_closed else self._fallback
            self._fallback_closed = True
        if fallback is not None:
            fallback.shutdown(time.monotonic() + self._settings.exit_timeout_s)
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_WR)

    def describe(self) -> str:
        if self._fallback is not None:
            return "; ".join(w.sink.describe() for w in self._fallback.workers)
        shown = "; ".join(f"{k}: {v}" for k, v in self._descriptions.items()) or self.name
        return f"{shown} (export process {self._pid or 'starting'})"

    # -- what `sink_status()` and `doctor` read ---------------------------------------------------

    def statuses(self) -> dict[str, str | None]:
        """Each network sink's last error (None when it delivers)."""
        if self._fallback is not None:
            return {w.sink.name: w.last_error for w in self._fallback.workers}
        return {name: self._statuses.get(name) for name in self.drop_names}

    @property
    def pid(self) -> int:
        """The export process's id once it has started its sinks (0 before, or without one)."""
        return self._pid

    def started(self, timeout_s: float) -> bool:
        """Wait until the export process has built its sinks; False if it has not, or failed."""
        self._started_here()
        return self._ready.wait(timeout_s) and self._failure is None

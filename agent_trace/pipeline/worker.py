"""A bounded queue and export thread per sink, with flush and shutdown that keep their deadline.

The SDK's `BatchSpanProcessor` blocks in `force_flush`/`shutdown` for as long as a hanging
exporter takes (27-40 s measured here), whatever timeout it is given. This worker never waits
on the export call itself: callers wait on a condition with a deadline, and a stuck export
thread is a daemon that the process may leave behind.

Export threads take turns: each export call first waits (briefly) for a lock the export
threads of the process share, so the application competes for the GIL with one exporter at a
time, not with all of them. With the OTLP and Sentry sinks both on, a FastAPI service's
single-connection p99 went from 2.0 to 1.5 times the uninstrumented one's (BENCHMARKS.md). A
sink that hangs holds the turn for no one: the others stop waiting after `_TURN_WAIT_S`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan

from agent_trace._fork import reset_in_forked_child
from agent_trace._log import warn_once
from agent_trace.pipeline.drops import (
    AFTER_SHUTDOWN,
    EXPORT_FAILED,
    QUEUE_FULL,
    SHUTDOWN_TIMEOUT,
    DropCounter,
)
from agent_trace.pipeline.sinks._pacing import PacedBatch

__all__ = ["SinkWorker", "SpanSink"]

_log = logging.getLogger(__name__)

# Shutdown stops waiting for the export thread this long before its deadline, so that counting
# and reporting what was lost is done before the caller's deadline, not just after it.
_BOOKKEEPING_S = 0.05

# A full queue warns at most this often; the drops themselves are all counted.
_FULL_WARNING_INTERVAL_S = 60.0

# Instrumentation libraries check this key and stay silent: exports are never traced themselves.
_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY

# How long an export waits for its turn before it goes ahead anyway (a sink in a network
# timeout holds the turn).
_TURN_WAIT_S = 0.05


class _Turns:
    """The export threads' turns, given in the order they were asked for: a thread with a
    backlog that asks again at once queues behind the others instead of taking the turn back
    (a plain lock would let it, and the others would wait out `_TURN_WAIT_S`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._taken = False
        self._waiting: deque[object] = deque()

    def acquire(self, timeout: float) -> bool:
        with self._cond:
            if not self._taken and not self._waiting:
                self._taken = True
                return True
            ticket = object()
            self._waiting.append(ticket)
            if self._cond.wait_for(lambda: not self._taken and self._waiting[0] is ticket, timeout):
                self._waiting.popleft()
                self._taken = True
                return True
            self._waiting.remove(ticket)
            # The next in line may have been waiting behind this one.
            self._cond.notify_all()
            return False

    def release(self) -> None:
        with self._cond:
            self._taken = False
            self._cond.notify_all()


_turn = _Turns()


def _new_turn_after_fork() -> None:
    # A parent's export thread may have held the turn, or its lock, at the fork.
    global _turn
    _turn = _Turns()


os.register_at_fork(after_in_child=_new_turn_after_fork)


class SpanSink(Protocol):
    """Where finished, scrubbed spans go. Methods are called on the sink's own export thread."""

    name: str

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        """Deliver `spans`; return False (or raise) when they did not arrive."""

    def flush(self, timeout_s: float) -> bool:
        """Push out anything the sink buffers itself; called after the queue is drained."""

    def shutdown(self) -> None:
        """Release connections and files."""

    def describe(self) -> str:
        """Where this sink sends spans, with no secret in it."""


class SinkWorker:
    """Feeds one sink from a bounded queue on a daemon thread.

    `enqueue` is called on the application's threads and never blocks beyond a short lock.
    """

    def __init__(
        self,
        sink: SpanSink,
        drops: DropCounter,
        *,
        max_queue_size: int,
        max_batch_size: int,
        schedule_delay_s: float,
        pace: bool = True,
    ) -> None:
        self.sink = sink
        # Off in the export process, where no application thread waits for the GIL.
        self._pace = pace
        self._drops = drops
        self._max_queue = max_queue_size
        self._max_batch = max_batch_size
        self._delay_s = schedule_delay_s
        self._queue: deque[ReadableSpan] = deque()
        self._cond = threading.Condition()
        self._flush_requested = False
        self._closed = False
        # Set once the queue holds a batch and the export thread was woken for it; the thread
        # clears it when it takes a batch, so a busy queue notifies once per batch, not per span.
        self._signalled = False
        # Monotonic tallies that let flush() know when everything enqueued before it is done:
        # spans taken off the queue (by the export thread or as written off) and spans settled.
        self._taken = 0
        self._done = 0
        self._failed = 0
        # Spans inside the sink's export call right now; shutdown writes them off if it gives up.
        self._in_flight = 0
        self._written_off = False
        # A sink whose spans do not map onto batches (the Sentry sink sends whole trees, some
        # spans parked across batches) counts its own losses: an export returning False then
        # only means "not everything arrived".
        self._own_drops = bool(getattr(sink, "counts_own_drops", False))
        # A sink standing for several (the export process's) has its losses counted under
        # each of their names.
        self._names: tuple[str, ...] = tuple(getattr(sink, "drop_names", None) or (sink.name,))
        self._full = [drops.cell(name, QUEUE_FULL) for name in self._names]
        self._full_lock = threading.Lock()
        self._next_full_warning = 0.0
        self.last_error: str | None = None
        self.exported = 0
        self._start_thread()
        reset_in_forked_child(self, SinkWorker._reinit_after_fork)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"agent-trace-{self.sink.name}", daemon=True
        )
        self._thread.start()

    def _reinit_after_fork(self) -> None:
        # The child inherits the parent's queue (those spans belong to the parent, which
        # exports them) but not its thread: start clean.
        self._cond = threading.Condition()
        self._full_lock = threading.Lock()
        self._queue.clear()
        self._taken = self._done = self._failed = self._in_flight = 0
        self._written_off = False
        self._flush_requested = False
        self._signalled = False
        if not self._closed:
            self._start_thread()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Spans inside the sink's export call right now."""
        return self._in_flight

    def _count(self, reason: str, count: int) -> None:
        for name in self._names:
            self._drops.add(name, reason, count)

    def enqueue(self, span: ReadableSpan) -> None:
        queue = self._queue
        if self._closed:
            self._count(AFTER_SHUTDOWN, 1)
            return
        if len(queue) >= self._max_queue:
            self._drop_full()
            return
        # No lock on this path, as in the SDK's batch processor: `deque.append` is atomic, and
        # only the export thread and shutdown take spans off, under the condition's lock.
        # Threads racing here may overfill the queue by one span each, never more.
        queue.append(span)
        if self._closed:
            # Shutdown emptied the queue between our check and our append.
            self._write_off_late()
        elif len(queue) >= self._max_batch and not self._signalled:
            self._signalled = True
            with self._cond:
                self._cond.notify()

    def _drop_full(self) -> None:
        with self._full_lock:
            for cell in self._full:
                cell.count += 1
        now = time.monotonic()
        if now < self._next_full_warning:
            return
        self._next_full_warning = now + _FULL_WARNING_INTERVAL_S
        warn_once(
            _log,
            f"queue_full:{self.sink.name}",
            "agent-trace: the %s sink's queue is full (%d spans); new spans are dropped "
            "and counted until it drains",
            self.sink.name,
            self._max_queue,
        )

    def _take_all(self) -> int:
        """Empty the queue (under the condition's lock); the spans count as settled, failed."""
        queue = self._queue
        count = 0
        # One span at a time: an append racing with us is either taken here or left for the
        # appender, which checks `_closed` after appending.
        while queue:
            queue.popleft()
            count += 1
        self._taken += count
        self._done += count
        self._failed += count
        return count

    def _write_off_late(self) -> None:
        with self._cond:
            late = self._take_all()
            self._cond.notify_all()
        self._count(AFTER_SHUTDOWN, late)

    def _run(self) -> None:
        otel_context.attach(otel_context.set_value(_SUPPRESS_KEY, True))
        while True:
            with self._cond:
                if not (
                    len(self._queue) >= self._max_batch or self._flush_requested or self._closed
                ):
                    self._cond.wait(self._delay_s)
                self._signalled = False
                if not self._queue:
                    if self._flush_requested:
                        self._flush_requested = False
                        self._cond.notify_all()
                    if self._closed:
                        return
                    continue
                count = min(self._max_batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
                self._taken += count
                self._in_flight = count
                paced = self._pace and self._should_pace()
            self._export(PacedBatch(batch, self._should_pace) if paced else batch)

    def _should_pace(self) -> bool:
        """The application's threads first (see `_pacing`), unless a backlog builds up or
        someone waits for the export: a flush or shutdown has a deadline to keep."""
        return len(self._queue) < self._max_batch and not self._flush_requested and not self._closed

    def _export(self, batch: Sequence[ReadableSpan]) -> None:
        ok = False
        turn = _turn
        has_turn = turn.acquire(timeout=_TURN_WAIT_S)
        try:
            ok = bool(self.sink.export(batch))
            if not ok:
                self.last_error = "the export failed (refused, timed out or unreachable)"
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            if has_turn:
                turn.release()
        with self._cond:
            # A batch that outlived shutdown was already counted (and reported) as lost there.
            written_off, self._written_off = self._written_off, False
            self._in_flight = 0
            self._done += len(batch)
            if not ok:
                self._failed += len(batch)
            self._cond.notify_all()
        if ok:
            self.exported += len(batch)
            self.last_error = None
        elif self._own_drops:
            self.last_error = getattr(self.sink, "last_error", None) or self.last_error
        elif not written_off:
            self._count(EXPORT_FAILED, len(batch))
            warn_once(
                _log,
                f"export_failed:{self.sink.name}",
                "agent-trace: %d spans could not be delivered to the %s sink (%s): %s",
                len(batch),
                self.sink.name,
                self.sink.describe(),
                self.last_error,
            )

    def flush(self, deadline: float) -> bool:
        """Wait until everything queued before the call is exported, or until `deadline`."""
        with self._cond:
            target = self._taken + len(self._queue)
            failed_before = self._failed
            self._flush_requested = True
            self._cond.notify_all()
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            delivered = self._failed == failed_before
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        return _call_with_deadline(lambda: self.sink.flush(remaining), remaining) and delivered

    def shutdown(self, deadline: float) -> bool:
        """Flush within the deadline, then stop; every span not delivered by then is counted.

        Spans still queued, and a batch the sink is still busy with, are counted as
        `shutdown_timeout` and reported in one warning; a late answer for that batch changes
        neither the count nor the log.
        """
        started = time.monotonic()
        begin = getattr(self.sink, "begin_shutdown", None)
        if begin is not None:
            try:
                begin()
            except Exception:
                _log.debug("agent-trace: begin_shutdown failed", exc_info=True)
        delivered = self.flush(deadline - _BOOKKEEPING_S)
        with self._cond:
            self._closed = True
            left = self._take_all()
            # A sink that counts its own drops counts what it still holds at its shutdown.
            stuck = 0 if self._own_drops else self._in_flight
            self._written_off = stuck > 0
            self._cond.notify_all()
        lost = left + stuck
        if lost:
            self._count(SHUTDOWN_TIMEOUT, lost)
            warn_once(
                _log,
                f"shutdown:{self.sink.name}",
                "agent-trace: shutdown gave up on the %s sink (%s) after %.1f s; %d spans were "
                "not delivered (see agent_trace.dropped_spans())",
                self.sink.name,
                self.sink.describe(),
                time.monotonic() - started,
                lost,
            )
        remaining = max(0.0, deadline - time.monotonic())
        closed = _call_with_deadline(self.sink.shutdown, remaining)
        return delivered and closed and lost == 0


def _call_with_deadline(fn: object, timeout_s: float) -> bool:
    """Run `fn` on a daemon thread and wait at most `timeout_s`; False on timeout or error."""
    result: list[bool] = []

    def target() -> None:
        try:
            value = fn()  # type: ignore[operator]
            result.append(value is not False)
        except Exception:
            _log.debug("agent-trace: sink call failed", exc_info=True)
            result.append(False)

    thread = threading.Thread(target=target, name="agent-trace-deadline", daemon=True)
    try:
        thread.start()
    except RuntimeError:
        # At interpreter exit (Python 3.12+) no thread can start: call it here, unguarded.
        target()
    else:
        thread.join(max(0.0, timeout_s))
    return bool(result) and result[0]

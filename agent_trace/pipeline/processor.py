"""The one span processor on our provider: fan out to every sink, each span scrubbed once."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from agent_trace._log import internal_error
from agent_trace.pipeline.drops import DropCounter
from agent_trace.pipeline.scrub import Scrubber
from agent_trace.pipeline.sinks._pacing import Pacer
from agent_trace.pipeline.worker import SinkWorker, SpanSink

__all__ = ["SCRUB_FAILED", "PipelineProcessor"]

_log = logging.getLogger(__name__)

# The drop reason of a span that could not be scrubbed: no sink ever receives it.
SCRUB_FAILED = "scrub_failed"


class _Pending:
    """A finished span queued for several sinks, scrubbed by the first export thread to reach
    it (or on the application's thread, for synchronous sinks); the others take its result."""

    __slots__ = ("clean", "failed", "span")

    def __init__(self, span: ReadableSpan, clean: ReadableSpan | None = None) -> None:
        self.span = span
        self.clean = clean
        self.failed = False


class PipelineProcessor(SpanProcessor):
    """Called by the SDK on the application's thread when a span ends.

    Scrubbing happens once per span, before any sink sees it, and the scrubbed span is the same
    object for every sink, so every sink receives identical ids, attributes and redactions.
    Synchronous sinks (the test kit's memory sink) are fed inline, scrubbed inline. The others
    get the span through their own bounded queue, unscrubbed, and it is scrubbed on their
    export threads (`_scrubbed`): the application's thread only appends to the queues. A span
    that cannot be scrubbed is counted as dropped (`scrub_failed`) for every sink.
    """

    def __init__(
        self,
        scrubber: Scrubber,
        workers: Sequence[SinkWorker],
        synchronous: Sequence[SpanSink],
        drops: DropCounter,
    ) -> None:
        self._scrubber = scrubber
        self._workers = tuple(workers)
        self._synchronous = tuple(synchronous)
        self._drops = drops
        # With one queued sink, its queue holds the spans themselves; with more, one shared
        # `_Pending` per span, so that a span is scrubbed once whichever thread gets to it.
        self._shared = len(self._workers) > 1
        # Export threads scrub under this lock: the first to reach a shared span scrubs it.
        self._scrub_lock = threading.Lock()
        for worker in self._workers:
            worker.prepare = functools.partial(self._scrubbed, worker.sink.name)
        self_ref = weakref.ref(self)

        def _after_fork() -> None:
            # An export thread scrubbing at the fork holds the lock forever in the child, where
            # that thread does not exist: the child's export threads would wait on it for good.
            processor = self_ref()
            if processor is not None:
                processor._scrub_lock = threading.Lock()

        os.register_at_fork(after_in_child=_after_fork)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        item: Any = span
        if self._synchronous:
            clean = self._scrub(span)
            if clean is None:
                for name in self.sink_names:
                    self._drops.add(name, SCRUB_FAILED)
                return
            for sink in self._synchronous:
                try:
                    sink.export((clean,))
                except Exception:
                    internal_error(_log, f"sink {sink.name}")
            item = _Pending(span, clean)
        elif self._shared:
            item = _Pending(span)
        for worker in self._workers:
            worker.enqueue(item)

    def _scrub(self, span: ReadableSpan) -> ReadableSpan | None:
        try:
            return self._scrubber.span(span)
        except Exception:
            # Never pass on a span we could not scrub: it is counted lost instead.
            internal_error(_log, "scrubbing")
            return None

    def _scrubbed(
        self, sink_name: str, items: Sequence[Any], pacer: Pacer | None
    ) -> list[ReadableSpan]:
        """The scrubbed spans of a batch, on a sink's export thread (see `SinkWorker.prepare`).

        Spans that cannot be scrubbed are left out and counted for this sink; every other sink
        meets the same failure (a shared span is tried once) and counts its own.
        """
        spans: list[ReadableSpan] = []
        failed = 0
        with self._scrub_lock:
            for item in items:
                if pacer is not None:
                    pacer.tick()
                if type(item) is _Pending:
                    clean = item.clean
                    if clean is None and not item.failed:
                        clean = item.clean = self._scrub(item.span)
                        item.failed = clean is None
                else:
                    clean = self._scrub(item)
                if clean is None:
                    failed += 1
                else:
                    spans.append(clean)
        if failed:
            self._drops.add(sink_name, SCRUB_FAILED, failed)
        return spans

    @property
    def sink_names(self) -> list[str]:
        return [w.sink.name for w in self._workers] + [s.name for s in self._synchronous]

    @property
    def workers(self) -> tuple[SinkWorker, ...]:
        return self._workers

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        return _all_by(deadline, [functools.partial(w.flush, deadline) for w in self._workers])

    def shutdown(self) -> None:
        # The provider calls this without a deadline; `agent_trace.shutdown` calls
        # `shutdown_within` first, so this is a no-op for workers already closed.
        self.shutdown_within(5.0)

    def shutdown_within(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return _all_by(deadline, [functools.partial(w.shutdown, deadline) for w in self._workers])


def _all_by(deadline: float, calls: Sequence[Callable[[], bool]]) -> bool:
    """Run the calls side by side, so one hanging sink does not eat the others' time."""
    results: dict[int, bool] = {}

    def run(index: int, call: Callable[[], bool]) -> None:
        try:
            results[index] = call()
        except Exception:
            internal_error(_log, "flush")
            results[index] = False

    threads = [
        threading.Thread(target=run, args=(i, c), name="agent-trace-flush", daemon=True)
        for i, c in enumerate(calls)
    ]
    started = []
    for index, thread in enumerate(threads):
        try:
            thread.start()
        except RuntimeError:
            # At interpreter exit (Python 3.12+) no thread can start: run the call here.
            run(index, calls[index])
            continue
        started.append(thread)
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    return all(results.get(i, False) for i in range(len(calls)))

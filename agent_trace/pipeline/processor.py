"""The one span processor on our provider: scrub once, then fan out to every sink."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from agent_trace._log import internal_error
from agent_trace.pipeline.drops import DropCounter
from agent_trace.pipeline.scrub import Scrubber
from agent_trace.pipeline.worker import SinkWorker, SpanSink

__all__ = ["PipelineProcessor", "flush_all", "shutdown_all"]

_log = logging.getLogger(__name__)


class PipelineProcessor(SpanProcessor):
    """Called by the SDK on the application's thread when a span ends.

    The scrubbed span is the same object for every sink, so every sink receives identical ids,
    attributes and redactions. Synchronous sinks (the test kit's memory sink) are fed inline;
    the others get the span through their own bounded queue.
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

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        try:
            clean = self._scrubber.span(span)
        except Exception:
            # Never pass on a span we could not scrub: count it lost instead.
            internal_error(_log, "scrubbing")
            for name in self.sink_names:
                self._drops.add(name, "scrub_failed")
            return
        for sink in self._synchronous:
            try:
                sink.export((clean,))
            except Exception:
                internal_error(_log, f"sink {sink.name}")
        for worker in self._workers:
            worker.enqueue(clean)

    @property
    def sink_names(self) -> list[str]:
        return [w.sink.name for w in self._workers] + [s.name for s in self._synchronous]

    @property
    def workers(self) -> tuple[SinkWorker, ...]:
        return self._workers

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        return flush_all(self._workers, deadline)

    def shutdown(self) -> None:
        # The provider calls this without a deadline; `agent_trace.shutdown` calls
        # `shutdown_within` first, so this is a no-op for workers already closed.
        self.shutdown_within(5.0)

    def shutdown_within(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return shutdown_all(self._workers, deadline)


def flush_all(workers: Sequence[SinkWorker], deadline: float) -> bool:
    """Flush the workers side by side; whether all delivered by `deadline`."""
    return _all_by(deadline, [functools.partial(w.flush, deadline) for w in workers])


def shutdown_all(workers: Sequence[SinkWorker], deadline: float) -> bool:
    """Shut the workers down side by side; whether all delivered by `deadline`."""
    return _all_by(deadline, [functools.partial(w.shutdown, deadline) for w in workers])


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

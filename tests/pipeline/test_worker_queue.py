"""The per-sink queue: the application's threads append without a lock, and still every span
is either exported or counted with its reason, and a full batch wakes the export thread."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from agent_trace.pipeline.drops import AFTER_SHUTDOWN, QUEUE_FULL, DropCounter
from agent_trace.pipeline.worker import SinkWorker


class RecordingSink:
    name = "recording"

    def __init__(self, *, block: bool = False) -> None:
        self.spans: list[ReadableSpan] = []
        self.batches = 0
        self.exported = threading.Event()
        self._release = threading.Event()
        if not block:
            self._release.set()

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        self._release.wait()
        self.spans.extend(spans)
        self.batches += 1
        self.exported.set()
        return True

    def release(self) -> None:
        self._release.set()

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None

    def describe(self) -> str:
        return "a list"


def finished_spans(count: int) -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("test")
    spans = []
    for i in range(count):
        span = tracer.start_span(f"span {i}")
        span.end()
        spans.append(span)
    return spans


@pytest.fixture
def drops() -> DropCounter:
    return DropCounter()


def worker_for(
    sink: RecordingSink, drops: DropCounter, *, queue: int = 100, batch: int = 10
) -> SinkWorker:
    # A schedule delay far longer than any test: exports happen only when woken.
    return SinkWorker(
        sink, drops, max_queue_size=queue, max_batch_size=batch, schedule_delay_s=3600.0
    )


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    sink = RecordingSink()
    yield sink
    sink.release()


def test_a_full_batch_wakes_the_export_thread(sink: RecordingSink, drops: DropCounter) -> None:
    worker = worker_for(sink, drops, batch=10)

    for span in finished_spans(10):
        worker.enqueue(span)

    assert sink.exported.wait(10.0)
    assert len(sink.spans) == 10
    worker.shutdown(time.monotonic() + 5.0)


def test_flush_delivers_everything_enqueued_before_it(
    sink: RecordingSink, drops: DropCounter
) -> None:
    worker = worker_for(sink, drops, batch=10)
    spans = finished_spans(25)
    for span in spans:
        worker.enqueue(span)

    assert worker.flush(time.monotonic() + 10.0)

    assert sink.spans == spans
    assert drops.snapshot() == {}
    worker.shutdown(time.monotonic() + 5.0)


def test_spans_beyond_a_full_queue_are_counted_as_queue_full(drops: DropCounter) -> None:
    sink = RecordingSink(block=True)
    worker = worker_for(sink, drops, queue=20, batch=10)
    spans = finished_spans(50)

    for span in spans:
        worker.enqueue(span)
    sink.release()
    worker.flush(time.monotonic() + 10.0)

    # The queue holds 20; a batch of 10 the export thread took meanwhile made room for 10 more.
    full = drops.snapshot()[("recording", QUEUE_FULL)]
    assert len(sink.spans) in (20, 30)
    assert full + len(sink.spans) == 50
    worker.shutdown(time.monotonic() + 5.0)


def test_queue_full_drops_stay_counted_after_the_worker_is_gone(drops: DropCounter) -> None:
    sink = RecordingSink(block=True)
    worker = worker_for(sink, drops, queue=5, batch=5)
    for span in finished_spans(40):
        worker.enqueue(span)
    full = drops.snapshot()[("recording", QUEUE_FULL)]
    assert full >= 30

    sink.release()
    worker.shutdown(time.monotonic() + 5.0)
    del worker

    assert drops.snapshot()[("recording", QUEUE_FULL)] == full


def test_spans_enqueued_after_shutdown_are_counted(sink: RecordingSink, drops: DropCounter) -> None:
    worker = worker_for(sink, drops)
    worker.shutdown(time.monotonic() + 5.0)

    for span in finished_spans(3):
        worker.enqueue(span)

    assert drops.snapshot() == {("recording", AFTER_SHUTDOWN): 3}
    assert worker.queued == 0


class ShutdownBeforeAppend(deque[ReadableSpan]):
    """A queue whose next append finds that shutdown emptied it just before (the race an
    application thread can lose between its `closed` check and its append)."""

    def __init__(self, worker: SinkWorker) -> None:
        super().__init__()
        self.worker = worker
        self.raced = False

    def append(self, span: ReadableSpan) -> None:
        if not self.raced:
            self.raced = True
            self.worker.shutdown(time.monotonic() + 5.0)
        super().append(span)


def test_a_span_appended_while_shutdown_empties_the_queue_is_counted(
    sink: RecordingSink, drops: DropCounter
) -> None:
    worker = worker_for(sink, drops)
    worker._queue = ShutdownBeforeAppend(worker)

    worker.enqueue(finished_spans(1)[0])

    assert drops.snapshot() == {("recording", AFTER_SHUTDOWN): 1}
    assert worker.queued == 0
    assert sink.spans == []

"""Export threads take turns with their exports, and a sink that hangs holds the turn for no one.

The application shares the GIL with every export thread; two exporters encoding at once make
a request wait for both. Each export call waits (briefly) for a lock the export threads share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan

import agent_trace
from agent_trace.pipeline import worker
from agent_trace.testing import capture_spans


def spin(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


class TimedSink:
    """Records when each of its export calls ran: a millisecond of CPU, a wait (as on the
    network, the GIL released), another millisecond of CPU."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[float, float]] = []
        self.spans = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        started = time.perf_counter()
        spin(0.001)
        time.sleep(0.002)
        spin(0.001)
        with self._lock:
            self.calls.append((started, time.perf_counter()))
            self.spans += len(spans)
        return True

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None

    def describe(self) -> str:
        return f"timed://{self.name}"


class HungSink(TimedSink):
    """Its first export never returns until released: a backend in a network timeout."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        self.entered.set()
        self.release.wait()
        return True


def run_turns(count: int) -> None:
    for index in range(count):
        with agent_trace.turn(f"agent-{index}"):
            pass


def test_two_sinks_never_export_at_the_same_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither gives up waiting here, however slow a loaded machine makes the other's export.
    monkeypatch.setattr(worker, "_TURN_WAIT_S", 30.0)
    first, second = TimedSink("first"), TimedSink("second")
    with capture_spans(_extra_sinks=[first, second], max_export_batch_size=4):
        for _ in range(20):
            run_turns(4)
            time.sleep(0.002)
        assert agent_trace.force_flush(timeout_s=10)

    assert first.spans == second.spans == 80
    assert len(first.calls) >= 5 and len(second.calls) >= 5
    overlaps = [
        (a, b)
        for a in first.calls
        for b in second.calls
        if a[0] < b[1] and b[0] < a[1]  # the two intervals share a moment
    ]
    assert overlaps == []


@pytest.fixture
def hung() -> Iterator[HungSink]:
    sink = HungSink("hung")
    yield sink
    sink.release.set()


def test_a_hung_sink_does_not_hold_the_others_back(hung: HungSink) -> None:
    other = TimedSink("other")
    with capture_spans(_extra_sinks=[hung, other], max_export_batch_size=4):
        run_turns(4)
        assert hung.entered.wait(5.0)
        # The hung sink holds the turn from now on; the other sink's exports go ahead.
        run_turns(40)
        deadline = time.monotonic() + 5.0
        while other.spans < 44 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert other.spans == 44
        hung.release.set()


def test_turns_go_in_the_order_they_were_asked_for() -> None:
    # A thread with a backlog that asks again right after its turn must queue behind the
    # thread already waiting, or that one would wait out its bound every time.
    turns = worker._Turns()
    order: list[str] = []
    assert turns.acquire(timeout=1.0)
    waiting = threading.Event()

    def other() -> None:
        waiting.set()
        assert turns.acquire(timeout=10.0)
        order.append("other")
        turns.release()

    thread = threading.Thread(target=other)
    thread.start()
    assert waiting.wait(5.0)
    deadline = time.monotonic() + 5.0
    while not turns._waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    turns.release()
    assert turns.acquire(timeout=10.0)
    order.append("again")
    turns.release()
    thread.join(5.0)

    assert order == ["other", "again"]


def test_a_turn_not_given_within_the_bound_is_given_up_and_the_line_moves_on() -> None:
    turns = worker._Turns()
    assert turns.acquire(timeout=1.0)
    assert turns.acquire(timeout=0.05) is False
    turns.release()
    assert turns.acquire(timeout=0.05) is True

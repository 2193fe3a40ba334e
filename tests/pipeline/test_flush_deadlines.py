"""Flush and shutdown keep their deadline against a sink that refuses or never answers.

The OpenTelemetry SDK's own flush ignores its timeout against such sinks (27-40 s measured on
these machines); agent-trace must return within timeout + 0.5 s, never block the application,
count every span it drops by reason, and log a failing sink once rather than once per span.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import ReadableSpan

import agent_trace
from agent_trace import _log
from agent_trace.testing import CapturedSpans, capture_spans
from tests.backends.otlp_recorder import OtlpGrpcRecorder, OtlpHttpRecorder, closed_port

pytestmark = pytest.mark.integration

DEADLINE_S = 1.0
SLACK_S = 0.5


@dataclass(frozen=True)
class BadSink:
    endpoint: str
    protocol: str


@pytest.fixture(params=["grpc-refused", "http-refused", "grpc-hanging", "http-hanging"])
def bad_sink(request: pytest.FixtureRequest) -> BadSink:
    protocol, behaviour = request.param.split("-")
    if behaviour == "refused":
        port = closed_port()
        path = "/v1/traces" if protocol == "http" else ""
        return BadSink(f"http://127.0.0.1:{port}{path}", protocol)
    if protocol == "http":
        http: OtlpHttpRecorder = request.getfixturevalue("otlp_http_recorder")
        http.hang()
        return BadSink(http.traces_url, protocol)
    grpc: OtlpGrpcRecorder = request.getfixturevalue("otlp_grpc_recorder")
    grpc.hang()
    return BadSink(grpc.endpoint, protocol)


@pytest.fixture
def traced_to_bad_sink(bad_sink: BadSink) -> Iterator[CapturedSpans]:
    with capture_spans(
        "deadline-test",
        otlp_endpoint=bad_sink.endpoint,
        otlp_protocol=bad_sink.protocol,
        max_queue_size=200,
        max_export_batch_size=50,
    ) as captured:
        yield captured
        # Within the test's own deadline; the kit's 5 s shutdown then has nothing left to do.
        agent_trace.shutdown(timeout_s=DEADLINE_S)


def run_sessions(count: int) -> list[float]:
    """Run `count` small sessions; returns each one's duration in seconds."""
    durations = []
    for i in range(count):
        started = time.perf_counter()
        with agent_trace.session("review", session_id=f"s{i}") as s, s.turn("ethics"):
            pass
        durations.append(time.perf_counter() - started)
    return durations


def drops_since(before: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    after = agent_trace.dropped_spans()
    return {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}


# The worker's shutdown flushes until the very deadline and only then counts what is left,
# while shutdown() stops waiting for it at that same deadline: now and then (about one run in
# six here) the leftovers are counted a few milliseconds after shutdown() returned. Reads of
# the counts right after shutdown therefore allow this grace. (pipeline/worker.py and
# processor.py: counting the leftovers should happen before the deadline.)
GRACE_S = 0.5


def drops_after_grace(
    before: dict[tuple[str, str], int], reason: tuple[str, str]
) -> dict[tuple[str, str], int]:
    deadline = time.monotonic() + GRACE_S
    drops = drops_since(before)
    while reason not in drops and time.monotonic() < deadline:
        time.sleep(0.01)
        drops = drops_since(before)
    return drops


def test_force_flush_returns_false_within_its_deadline(traced_to_bad_sink: CapturedSpans) -> None:
    run_sessions(20)

    started = time.monotonic()
    delivered = agent_trace.force_flush(timeout_s=DEADLINE_S)
    elapsed = time.monotonic() - started

    assert delivered is False
    assert elapsed < DEADLINE_S + SLACK_S


def test_shutdown_returns_false_within_its_deadline(traced_to_bad_sink: CapturedSpans) -> None:
    run_sessions(20)

    started = time.monotonic()
    delivered = agent_trace.shutdown(timeout_s=DEADLINE_S)
    elapsed = time.monotonic() - started

    assert delivered is False
    assert elapsed < DEADLINE_S + SLACK_S
    assert agent_trace.settings() is None


def test_repeated_flushes_each_keep_their_deadline(traced_to_bad_sink: CapturedSpans) -> None:
    run_sessions(10)

    for _ in range(3):
        started = time.monotonic()
        assert agent_trace.force_flush(timeout_s=0.5) is False
        assert time.monotonic() - started < 0.5 + SLACK_S


def test_application_calls_are_never_blocked(traced_to_bad_sink: CapturedSpans) -> None:
    # Five times the queue: the sink is stuck, the queue fills, and sessions must go on.
    durations = run_sessions(500)

    # A session that waited on the stuck sink would wait for good; 1 s leaves room for a busy
    # two-core machine stalling one session for a few 100 ms.
    assert max(durations) < 1.0, f"slowest session took {max(durations):.3f} s"
    assert sum(durations) < 5.0
    # The in-memory reference got everything: only the stuck sink misses out.
    assert len(traced_to_bad_sink.spans) == 1000


def test_overflow_and_leftovers_are_counted_by_reason(traced_to_bad_sink: CapturedSpans) -> None:
    before = agent_trace.dropped_spans()

    run_sessions(500)
    agent_trace.shutdown(timeout_s=DEADLINE_S)

    drops = drops_after_grace(before, ("otlp", "shutdown_timeout"))
    assert drops.get(("otlp", "queue_full"), 0) > 0
    assert drops.get(("otlp", "shutdown_timeout"), 0) > 0
    # Export threads of earlier tests, still stuck on their sinks, may add export_failed counts
    # for "otlp" at any time: exact accounting is checked below with sinks of unique names.
    reasons = {reason for sink, reason in drops if sink == "otlp"}
    assert reasons <= {"queue_full", "shutdown_timeout", "export_failed"}


@pytest.fixture(params=["refused", "hanging"])
def sentry_down(request: pytest.FixtureRequest) -> Iterator[str]:
    """A DSN whose Sentry refuses connections or accepts them and never answers."""
    if request.param == "refused":
        yield f"http://public@127.0.0.1:{closed_port()}/0"
        return
    recorder: OtlpHttpRecorder = request.getfixturevalue("otlp_http_recorder")
    recorder.hang()
    yield f"http://public@127.0.0.1:{recorder.port}/0"


def test_sentry_down_keeps_flush_and_shutdown_deadlines(
    sentry_down: str, request: pytest.FixtureRequest
) -> None:
    with capture_spans(sentry_dsn=sentry_down) as captured:
        durations = run_sessions(200)

        started = time.monotonic()
        flushed = agent_trace.force_flush(timeout_s=DEADLINE_S)
        flush_s = time.monotonic() - started
        started = time.monotonic()
        closed = agent_trace.shutdown(timeout_s=DEADLINE_S)
        shutdown_s = time.monotonic() - started

    assert flushed is False
    assert flush_s < DEADLINE_S + SLACK_S
    assert shutdown_s < DEADLINE_S + SLACK_S
    if request.node.callspec.params["sentry_down"] == "hanging":
        # The transactions are still waiting for Sentry's answer: not delivered.
        assert closed is False
    else:
        # Refused: the sink gave each one up at once (counted as dropped), so nothing is left
        # in flight at shutdown and either answer is honest.
        assert isinstance(closed, bool)
    assert max(durations) < 1.0
    assert len(captured.spans) == 400


def settled_drops(quiet_s: float = 0.3, timeout_s: float = 5.0) -> dict[tuple[str, str], int]:
    """The drop counts once they stop moving: clients of earlier tests may still be failing."""
    deadline = time.monotonic() + timeout_s
    last = agent_trace.dropped_spans()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = agent_trace.dropped_spans()
        if now == last:
            break
        last = now
    return last


def test_sentry_refusing_connections_counts_the_lost_transactions() -> None:
    before = settled_drops()

    with capture_spans(sentry_dsn=f"http://public@127.0.0.1:{closed_port()}/0"):
        run_sessions(20)
        assert agent_trace.force_flush(timeout_s=5.0) is False

    drops = drops_after_grace(before, ("sentry", "network_error"))
    # One transaction per session, each carrying its turn: every span is accounted for.
    assert drops[("sentry", "network_error")] == 40


class HangingSink:
    """A sink whose export never returns until released: a backend that stopped answering."""

    def __init__(self) -> None:
        self.name = f"hanging-{uuid.uuid4().hex[:8]}"
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        self.entered.set()
        self.release.wait()
        return False

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None

    def describe(self) -> str:
        return "hanging://test"


@pytest.fixture
def hanging_sink() -> Iterator[HangingSink]:
    sink = HangingSink()
    yield sink
    sink.release.set()


def test_queued_spans_are_counted_when_shutdown_gives_up(hanging_sink: HangingSink) -> None:
    before = agent_trace.dropped_spans()
    with capture_spans(
        _extra_sinks=[hanging_sink], max_queue_size=100, max_export_batch_size=10
    ) as captured:
        run_sessions(100)
        assert hanging_sink.entered.wait(5.0)
        started = time.monotonic()
        assert agent_trace.shutdown(timeout_s=DEADLINE_S) is False
        assert time.monotonic() - started < DEADLINE_S + SLACK_S
        assert len(captured.spans) == 200

    drops = drops_after_grace(before, (hanging_sink.name, "shutdown_timeout"))
    full = drops[(hanging_sink.name, "queue_full")]
    left = drops[(hanging_sink.name, "shutdown_timeout")]
    # 200 spans: one batch (at most 10) is stuck inside export(), the queue was nearly full
    # when it closed, the rest found it full. Every one of them is counted, the stuck batch too.
    stuck = 200 - full - left
    assert stuck == 0, drops
    assert left >= 90


def test_every_undelivered_span_is_counted_when_shutdown_returns(
    hanging_sink: HangingSink,
) -> None:
    before = agent_trace.dropped_spans()
    with capture_spans(_extra_sinks=[hanging_sink], max_queue_size=100, max_export_batch_size=10):
        run_sessions(100)
        assert hanging_sink.entered.wait(5.0)  # one batch is inside export() for good
        assert agent_trace.shutdown(timeout_s=DEADLINE_S) is False

    drops = drops_after_grace(before, (hanging_sink.name, "shutdown_timeout"))
    ours = {reason: n for (sink, reason), n in drops.items() if sink == hanging_sink.name}
    assert sum(ours.values()) == 200, ours


# -- logging --------------------------------------------------------------------------------


class RaisingSink:
    """A sink whose every export fails, fed through the pipeline's own queue and thread."""

    def __init__(self) -> None:
        self.name = f"raising-{uuid.uuid4().hex[:8]}"
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        self.calls += 1
        raise ConnectionRefusedError("backend is down")

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None

    def describe(self) -> str:
        return "raising://test"


def warnings_from(caplog: pytest.LogCaptureFixture, prefix: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(prefix) and r.levelno >= logging.WARNING]


def test_a_failing_sink_is_logged_once_not_per_span(caplog: pytest.LogCaptureFixture) -> None:
    _log._reset_for_tests()
    sink = RaisingSink()
    before = agent_trace.dropped_spans()
    caplog.set_level(logging.WARNING)

    with capture_spans(_extra_sinks=[sink], max_export_batch_size=10):
        for _ in range(5):
            run_sessions(20)
            agent_trace.force_flush(timeout_s=2.0)
        status = agent_trace.sink_status()

    assert sink.calls >= 5
    [warning] = [r for r in warnings_from(caplog, "agent_trace") if sink.name in r.getMessage()]
    assert "backend is down" in warning.getMessage()
    assert drops_since(before)[(sink.name, "export_failed")] == 200
    assert status[sink.name].startswith("failing:")


def test_an_unreachable_otlp_sink_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    _log._reset_for_tests()
    caplog.set_level(logging.WARNING)
    endpoint = f"http://127.0.0.1:{closed_port()}/v1/traces"

    with capture_spans(
        otlp_endpoint=endpoint, otlp_protocol="http", export_timeout_s=0.2, max_export_batch_size=5
    ):
        for _ in range(4):
            run_sessions(10)
            agent_trace.force_flush(timeout_s=2.0)

    ours = [r for r in warnings_from(caplog, "agent_trace") if endpoint in r.getMessage()]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    # The exporter's own lines are rate-limited too: no message template twice, however many
    # batches failed.
    exporter = warnings_from(caplog, "opentelemetry.exporter.otlp")
    templates = [(r.name, r.msg) for r in exporter]
    assert len(templates) == len(set(templates)), templates


@pytest.mark.slow
def test_flush_keeps_its_deadline_when_only_the_metrics_export_hangs(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    # A short export timeout: the SDK's metrics exporter, left waiting on the hung recorder
    # after shutdown, would otherwise retry for 10 s in a thread of its own, drawing its
    # backoff from the global `random` under the next tests (hypothesis notices).
    with capture_spans(
        otlp_endpoint=otlp_http_recorder.traces_url,
        otlp_protocol="http",
        otlp_metrics=True,
        export_timeout_s=1.0,
    ):
        with agent_trace.session("review"):
            pass
        assert agent_trace.force_flush(timeout_s=5.0) is True
        otlp_http_recorder.hang()

        started = time.monotonic()
        agent_trace.force_flush(timeout_s=DEADLINE_S)
        elapsed = time.monotonic() - started
        agent_trace.shutdown(timeout_s=DEADLINE_S)

    assert elapsed < DEADLINE_S + SLACK_S


def test_drops_are_exported_as_a_metric_by_sink_and_reason() -> None:
    sink = RaisingSink()

    with capture_spans(_extra_sinks=[sink], max_export_batch_size=10) as captured:
        run_sessions(10)
        agent_trace.force_flush(timeout_s=2.0)

        points = captured.metrics()["agent_trace.spans.dropped"]

    assert ({"sink": sink.name, "reason": "export_failed"}, 20) in points

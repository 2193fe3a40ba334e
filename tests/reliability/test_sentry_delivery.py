"""What flush and shutdown report for Sentry: delivered means Sentry answered, nothing less.

sentry-sdk's transport only queues an envelope; its own thread sends it later, and its
`flush()` returns nothing whether or not the queue drained. agent-trace must follow each
transaction it handed over until Sentry answered it or the transport gave up on it: flush and
shutdown say False while one is still on its way, and shutdown counts every span it has to
leave behind in the transport as dropped, with its reason, once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import agent_trace
from tests.backends.otlp_recorder import OtlpHttpRecorder

pytestmark = pytest.mark.integration

SESSIONS = 10
SPANS_PER_TRANSACTION = 2  # the session and its one turn


def run_sessions(count: int) -> None:
    for index in range(count):
        with agent_trace.session("review", session_id=f"s{index}") as s, s.turn("ethics"):
            pass


def drops_since(before: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    after = agent_trace.dropped_spans()
    return {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}


def sentry_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sentry-sdk.BackgroundWorker"]


@pytest.fixture
def silent_sentry(otlp_http_recorder: OtlpHttpRecorder) -> Iterator[OtlpHttpRecorder]:
    """A Sentry that accepts every connection and request, and never answers."""
    otlp_http_recorder.hang()
    yield otlp_http_recorder


def dsn_of(recorder: OtlpHttpRecorder) -> str:
    return f"http://public@127.0.0.1:{recorder.port}/0"


def test_flush_and_shutdown_report_false_and_shutdown_counts_what_sentry_never_answered(
    silent_sentry: OtlpHttpRecorder,
) -> None:
    before = agent_trace.dropped_spans()
    with agent_trace.testing.capture_spans(sentry_dsn=dsn_of(silent_sentry), alert_policy=False):
        run_sessions(SESSIONS)
        # The flush hands every transaction to the transport, whose thread posts the first
        # and then waits forever for an answer: the rest stay in its queue.
        assert agent_trace.force_flush(timeout_s=0.5) is False
        silent_sentry.wait_for_requests(1)

        # Sentry has still answered nothing: shutdown cannot report success either, and
        # every span of every transaction it leaves behind is counted, with the reason.
        assert agent_trace.shutdown(timeout_s=0.5) is False

    assert drops_since(before) == {("sentry", "shutdown_timeout"): SESSIONS * SPANS_PER_TRANSACTION}


def test_transactions_written_off_at_shutdown_are_not_counted_again_when_they_fail_later(
    silent_sentry: OtlpHttpRecorder,
) -> None:
    before = agent_trace.dropped_spans()
    with agent_trace.testing.capture_spans(sentry_dsn=dsn_of(silent_sentry), alert_policy=False):
        run_sessions(SESSIONS)
        assert agent_trace.force_flush(timeout_s=0.5) is False
        silent_sentry.wait_for_requests(1)
        assert agent_trace.shutdown(timeout_s=0.5) is False
    counted = drops_since(before)

    # The request in flight is let go without an answer (the transport records it as lost);
    # the closed transport's thread then works off its queue and ends.
    silent_sentry.succeed()
    for worker in sentry_workers():
        worker.join(timeout=10)

    assert (
        drops_since(before)
        == counted
        == {("sentry", "shutdown_timeout"): SESSIONS * SPANS_PER_TRANSACTION}
    )


def test_flush_and_shutdown_report_true_once_sentry_answered_every_transaction(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    before = agent_trace.dropped_spans()
    with agent_trace.testing.capture_spans(
        sentry_dsn=dsn_of(otlp_http_recorder), alert_policy=False
    ):
        run_sessions(SESSIONS)
        assert agent_trace.force_flush(timeout_s=10) is True
        assert len(otlp_http_recorder.requests) >= SESSIONS

        run_sessions(SESSIONS)
        assert agent_trace.shutdown(timeout_s=10) is True

    assert len(otlp_http_recorder.requests) >= 2 * SESSIONS
    assert {key: n for key, n in drops_since(before).items() if key[0] == "sentry"} == {}


def test_transactions_sentry_refuses_with_429_are_counted_as_dropped(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    # sentry-sdk records no loss for a 429 (Sentry counts it on its side), but the spans in
    # it never reach Sentry: agent-trace counts them, and flush reports it.
    otlp_http_recorder.fail(429, retry_after_s=1)
    before = agent_trace.dropped_spans()
    with agent_trace.testing.capture_spans(
        sentry_dsn=dsn_of(otlp_http_recorder), alert_policy=False
    ):
        run_sessions(1)
        assert agent_trace.force_flush(timeout_s=10) is False

    assert drops_since(before) == {("sentry", "transport_status_429"): SPANS_PER_TRANSACTION}

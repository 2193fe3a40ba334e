"""What flush and shutdown report for Sentry: delivered means Sentry answered, nothing less.

The envelope sink posts each transaction itself and knows Sentry's answer: flush and shutdown
say False while one is still on its way or was refused, every span Sentry did not take is
counted with its reason (a 429, a rate limit still running, a rejection), and shutdown counts
what it leaves unanswered once.
"""

from __future__ import annotations

import threading
import time
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


def sentry_export_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "agent-trace-sentry"]


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
        # The sink's thread posts the first transaction and waits for an answer that never
        # comes: the rest wait behind it.
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

    # Shutdown closed the connection under the request in flight, which now fails, and the
    # sink's thread gives up the rest of its batch and ends: none of that is counted again.
    silent_sentry.succeed()
    threads = sentry_export_threads()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)

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


def test_transactions_sentry_refuses_with_429_are_counted_and_none_sent_until_retry_after(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    otlp_http_recorder.fail(429, retry_after_s=1)
    before = agent_trace.dropped_spans()
    with agent_trace.testing.capture_spans(
        sentry_dsn=dsn_of(otlp_http_recorder), alert_policy=False
    ):
        run_sessions(1)
        assert agent_trace.force_flush(timeout_s=10) is False
        assert len(otlp_http_recorder.requests) == 1

        # Sentry asked for a second's rest: the next transaction is counted, not sent.
        otlp_http_recorder.succeed()
        run_sessions(1)
        assert agent_trace.force_flush(timeout_s=10) is False
        assert len(otlp_http_recorder.requests) == 1
        assert drops_since(before) == {("sentry", "rate_limited"): 2 * SPANS_PER_TRANSACTION}

        time.sleep(1.1)
        run_sessions(1)
        assert agent_trace.force_flush(timeout_s=10) is True
        assert len(otlp_http_recorder.requests) == 2

    assert drops_since(before) == {("sentry", "rate_limited"): 2 * SPANS_PER_TRANSACTION}


@pytest.mark.parametrize(
    ("limits", "limited"),
    [
        ("2:transaction:organization", True),
        ("2::key", True),  # no category: every category
        ("2:error;default:project, 0:transaction:key", False),
    ],
)
def test_sentry_rate_limit_headers_on_accepted_envelopes_are_honoured_for_transactions(
    otlp_http_recorder: OtlpHttpRecorder, limits: str, limited: bool
) -> None:
    otlp_http_recorder.succeed(headers={"X-Sentry-Rate-Limits": limits})
    before = agent_trace.dropped_spans()
    with agent_trace.testing.capture_spans(
        sentry_dsn=dsn_of(otlp_http_recorder), alert_policy=False
    ):
        run_sessions(1)
        assert agent_trace.force_flush(timeout_s=10) is True
        run_sessions(3)
        assert agent_trace.force_flush(timeout_s=10) is (not limited)

    sent = 1 if limited else 4
    assert len(otlp_http_recorder.requests) == sent
    expected = {("sentry", "rate_limited"): 3 * SPANS_PER_TRANSACTION} if limited else {}
    assert drops_since(before) == expected


@pytest.mark.parametrize(
    ("status", "reason"), [(400, "rejected"), (413, "rejected"), (503, "server_error")]
)
def test_transactions_sentry_refuses_are_counted_by_reason_and_later_ones_still_sent(
    otlp_http_recorder: OtlpHttpRecorder, status: int, reason: str
) -> None:
    otlp_http_recorder.fail(status)
    before = agent_trace.dropped_spans()
    with agent_trace.testing.capture_spans(
        sentry_dsn=dsn_of(otlp_http_recorder), alert_policy=False
    ) as captured:
        run_sessions(2)
        assert agent_trace.force_flush(timeout_s=10) is False
        # A refusal is no outage: every transaction was tried.
        assert len(otlp_http_recorder.requests) == 2
        assert f"HTTP {status}" in agent_trace.sink_status()["sentry"]

        otlp_http_recorder.succeed()
        run_sessions(1)
        assert agent_trace.force_flush(timeout_s=10) is True
        assert agent_trace.sink_status()["sentry"] == "ok"
        assert len(captured.spans) == 3 * SPANS_PER_TRANSACTION

    assert drops_since(before) == {("sentry", reason): 2 * SPANS_PER_TRANSACTION}

"""A host program that sets up Sentry for itself after agent-trace did keeps both working.

agent-trace starts a sentry-sdk client of its own when the application has none. An
application that calls `sentry_sdk.init()` later (for its own project) replaces the global
client: agent-trace's transactions must still go to agent-trace's DSN, its flush must still
see them arrive, and agent-trace's shutdown must leave the application's client in place.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sentry_sdk

import agent_trace
from agent_trace import _runtime
from agent_trace.testing import capture_spans
from tests.backends.otlp_recorder import OtlpHttpRecorder
from tests.backends.spotlight import parse_envelope

pytestmark = pytest.mark.integration


def dsn_of(recorder: OtlpHttpRecorder) -> str:
    return f"http://public@127.0.0.1:{recorder.port}/0"


def transactions(recorder: OtlpHttpRecorder) -> list[str]:
    return [
        payload["transaction"]
        for request in recorder.requests
        for payload in parse_envelope(request.content).payloads("transaction")
    ]


def messages(recorder: OtlpHttpRecorder) -> list[str | None]:
    found: list[str | None] = []
    for request in recorder.requests:
        for payload in parse_envelope(request.content).payloads("event"):
            found.append(payload.get("message") or (payload.get("logentry") or {}).get("message"))
    return found


@pytest.fixture
def host_sentry() -> Iterator[OtlpHttpRecorder]:
    """The application's own Sentry project; its client is closed and removed afterwards."""
    with OtlpHttpRecorder() as recorder:
        try:
            yield recorder
        finally:
            client = sentry_sdk.get_client()
            if client.is_active() and client.dsn == dsn_of(recorder):
                client.close(timeout=2.0)
                sentry_sdk.get_global_scope().set_client(None)


def test_transactions_keep_going_to_agent_traces_dsn_after_the_host_sets_up_sentry(
    otlp_http_recorder: OtlpHttpRecorder, host_sentry: OtlpHttpRecorder
) -> None:
    with capture_spans(sentry_dsn=dsn_of(otlp_http_recorder), alert_policy=False):
        sentry_sdk.init(dsn=dsn_of(host_sentry), default_integrations=False)

        with agent_trace.session("review"):
            pass
        assert agent_trace.force_flush(timeout_s=10) is True

    assert transactions(otlp_http_recorder) == ["invoke_workflow review"]
    assert transactions(host_sentry) == []


def test_shutdown_leaves_the_hosts_own_sentry_client_in_place(
    otlp_http_recorder: OtlpHttpRecorder, host_sentry: OtlpHttpRecorder
) -> None:
    with capture_spans(sentry_dsn=dsn_of(otlp_http_recorder), alert_policy=False):
        sentry_sdk.init(dsn=dsn_of(host_sentry), default_integrations=False)
        assert agent_trace.shutdown(timeout_s=5) is True

    # The application goes on reporting its own errors to its own project.
    sentry_sdk.capture_message("the host still reports")
    sentry_sdk.flush(timeout=5)
    assert messages(host_sentry) == ["the host still reports"]


def test_error_and_alert_events_keep_going_to_agent_traces_dsn_after_the_host_sets_up_sentry(
    otlp_http_recorder: OtlpHttpRecorder, host_sentry: OtlpHttpRecorder
) -> None:
    with capture_spans(sentry_dsn=dsn_of(otlp_http_recorder), alert_policy=False):
        sentry_sdk.init(dsn=dsn_of(host_sentry), default_integrations=False)
        pipeline = _runtime.current()
        assert pipeline is not None

        with agent_trace.session("review") as s:
            pipeline.sentry.capture_exception(RuntimeError("agent down"), s.span, {"k": "v"})
        pipeline.sentry.capture_event({"message": "alert", "logger": "agent_trace.alerts"})
        assert agent_trace.force_flush(timeout_s=10) is True

    sent = [
        payload.get("message") or payload["exception"]["values"][0]["type"]
        for request in otlp_http_recorder.requests
        for payload in parse_envelope(request.content).payloads("event")
    ]
    assert sorted(sent) == ["RuntimeError", "alert"]
    assert messages(host_sentry) == []


def test_the_built_in_alerts_keep_going_to_agent_traces_dsn_after_the_host_sets_up_sentry(
    otlp_http_recorder: OtlpHttpRecorder, host_sentry: OtlpHttpRecorder
) -> None:
    with capture_spans(sentry_dsn=dsn_of(otlp_http_recorder)):
        sentry_sdk.init(dsn=dsn_of(host_sentry), default_integrations=False)

        with agent_trace.session("review") as s, s.policy_check("privacy") as check:
            check.violation("pii", "high")
        assert agent_trace.force_flush(timeout_s=10) is True

    sent = [message or "" for message in messages(otlp_http_recorder)]
    assert [m for m in sent if m.startswith("Constitutional violation: pii")], sent
    assert messages(host_sentry) == []

"""The Sentry sink in both modes, read back from what arrived.

Envelope mode goes to the real Spotlight sidecar (the `spotlight` fixture); every transaction
and error event is also passed through Sentry's own normalizer (Relay), which must find
nothing to object to. OTLP mode goes to a local OTLP/HTTP recorder posing as Sentry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans
from tests.backends.otlp_recorder import OtlpHttpRecorder, attributes_of
from tests.backends.relay import normalization_problems
from tests.backends.spotlight import Spotlight

pytestmark = pytest.mark.integration

HASH = "cdd01ef066bc6cf2"
REMOTE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN = "00f067aa0ba902b7"


def hex_id(span: ReadableSpan) -> str:
    return f"{span.context.span_id:016x}"


def plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def review(session_id: str) -> None:
    """A session with every kind of span and a violation raised (and handled) in a check."""
    with agent_trace.session("ethical_review", session_id=session_id, agents=["a", "b"]) as s:
        with s.turn("ethics", role="reviewer"), s.handoff("ethics", "legal"):
            pass
        with s.consensus_round("weighted_vote", participants=["a", "b"], threshold=0.66) as r:
            r.vote("a", "approve", weight=2.0, confidence=0.9, rationale="kept out")
            r.vote("b", "reject")
        try:
            with s.policy_check("privacy"):
                raise agent_trace.ConstitutionalViolationError(
                    "shares jane@example.org records", "privacy", severity="high"
                )
        except agent_trace.ConstitutionalViolationError:
            s.set_outcome("blocked")


@pytest.fixture
def envelope_capture(spotlight: Spotlight) -> Iterator[CapturedSpans]:
    with capture_spans(
        "sentry-envelope-test",
        sentry_dsn=spotlight.dsn,
        sentry_environment="test",
        sentry_release="coordinator@1.0.0",
        constitution_hash=HASH,
    ) as captured:
        yield captured


def assert_transaction_matches(
    transaction: dict[str, Any], root: ReadableSpan, captured: CapturedSpans
) -> None:
    trace_ctx = transaction["contexts"]["trace"]
    assert trace_ctx["trace_id"] == f"{root.context.trace_id:032x}"
    assert trace_ctx["span_id"] == hex_id(root)
    assert trace_ctx["op"] == root.attributes["sentry.op"]
    assert transaction["transaction"] == root.name
    assert transaction["tags"]["constitutional_hash"] == HASH
    assert transaction["start_timestamp"] == pytest.approx(root.start_time / 1e9, abs=1e-3)
    assert transaction["timestamp"] == pytest.approx(root.end_time / 1e9, abs=1e-3)

    descendants = {hex_id(s): s for s in captured.descendants(root)}
    by_id = {s["span_id"]: s for s in transaction["spans"]}
    assert set(by_id) == set(descendants)
    for span_id, sent in descendants.items():
        got = by_id[span_id]
        assert got["trace_id"] == trace_ctx["trace_id"]
        assert got["parent_span_id"] == f"{sent.parent.span_id:016x}"
        assert got["op"] == sent.attributes["sentry.op"]
        assert got["description"] == sent.name
        assert got["data"] == {k: plain(v) for k, v in sent.attributes.items()}
        assert got["start_timestamp"] == pytest.approx(sent.start_time / 1e9, abs=1e-3)


def test_each_local_root_is_one_transaction_with_its_children_as_spans(
    envelope_capture: CapturedSpans, spotlight: Spotlight
) -> None:
    review("first")
    review("second")
    assert agent_trace.force_flush(timeout_s=10.0) is True

    transactions = spotlight.wait_for_transactions(2)
    assert len(transactions) == 2
    by_trace = {t["contexts"]["trace"]["trace_id"]: t for t in transactions}
    for root in envelope_capture.sessions():
        transaction = by_trace[f"{root.context.trace_id:032x}"]
        assert_transaction_matches(transaction, root, envelope_capture)
        assert len(transaction["spans"]) == 6
        assert transaction["environment"] == "test"
        assert transaction["release"] == "coordinator@1.0.0"


def test_transactions_pass_sentrys_normalizer(
    envelope_capture: CapturedSpans, spotlight: Spotlight
) -> None:
    review("normalized")
    assert agent_trace.force_flush(timeout_s=10.0) is True

    [transaction] = spotlight.wait_for_transactions(1)
    assert normalization_problems(transaction) == []


def test_a_session_under_a_remote_parent_keeps_the_parent_id(
    envelope_capture: CapturedSpans, spotlight: Spotlight
) -> None:
    incoming = {"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"}
    token = otel_context.attach(propagate.extract(incoming))
    try:
        review("remote")
    finally:
        otel_context.detach(token)
    assert agent_trace.force_flush(timeout_s=10.0) is True

    [transaction] = spotlight.wait_for_transactions(1)
    trace_ctx = transaction["contexts"]["trace"]
    assert trace_ctx["trace_id"] == REMOTE_TRACE
    assert trace_ctx["parent_span_id"] == REMOTE_SPAN
    assert_transaction_matches(
        transaction, envelope_capture.one("invoke_workflow ethical_review"), envelope_capture
    )
    assert normalization_problems(transaction) == []


def test_violation_sends_one_error_event_linked_to_the_violating_span(
    envelope_capture: CapturedSpans, spotlight: Spotlight
) -> None:
    review("violating")
    assert agent_trace.force_flush(timeout_s=10.0) is True

    envelopes = spotlight.wait_for(
        lambda envs: (
            any(e.payloads("event") for e in envs) and any(e.payloads("transaction") for e in envs)
        ),
        describe="the error event and the transaction",
    )
    [event] = [p for e in envelopes for p in e.payloads("event")]
    check = envelope_capture.one("policy_check privacy")
    assert event["contexts"]["trace"]["trace_id"] == f"{check.context.trace_id:032x}"
    assert event["contexts"]["trace"]["span_id"] == hex_id(check)
    assert event["tags"]["constitutional_hash"] == HASH
    assert event["tags"]["violation_type"] == "privacy"
    assert event["tags"]["severity"] == "high"
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ConstitutionalViolationError"
    # The message is content: without capture_content it never leaves the process.
    assert "jane@example.org" not in str(event)
    assert normalization_problems(event) == []


def test_constructing_a_violation_sends_nothing(
    envelope_capture: CapturedSpans, spotlight: Spotlight
) -> None:
    with agent_trace.session("quiet"):
        agent_trace.ConstitutionalViolationError("not raised", "privacy")
    assert agent_trace.force_flush(timeout_s=10.0) is True

    spotlight.wait_for_transactions(1)
    assert spotlight.error_events() == []


# -- sentry_mode="otlp" ---------------------------------------------------------------------


SENTRY_KEY = "5d0e1f2a3b4c5d6e7f8091a2b3c4d5e6"


def test_otlp_mode_posts_to_sentrys_otlp_path_with_the_auth_header(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    dsn = f"http://{SENTRY_KEY}@127.0.0.1:{otlp_http_recorder.port}/7"
    with capture_spans(
        "sentry-otlp-test", sentry_dsn=dsn, sentry_mode="otlp", constitution_hash=HASH
    ) as captured:
        with agent_trace.session("review", session_id="s") as s, s.turn("ethics"):
            pass
        assert agent_trace.force_flush(timeout_s=10.0) is True
        sent = captured.spans

    traces = [r for r in otlp_http_recorder.requests if r.spans]
    assert traces
    for request in traces:
        assert request.method == "POST"
        assert request.path == "/api/7/integration/otlp/v1/traces/"
        assert request.header("X-Sentry-Auth") == f"Sentry sentry_key={SENTRY_KEY}"
        assert request.header("Content-Type") == "application/x-protobuf"
    received = {s.span_id.hex(): s for r in traces for s in r.spans}
    assert set(received) == {hex_id(s) for s in sent}
    for span in sent:
        assert received[hex_id(span)].name == span.name
        assert attributes_of(received[hex_id(span)]) == {
            k: plain(v) for k, v in span.attributes.items()
        }


def test_violation_in_a_sampled_out_trace_still_reaches_sentry(spotlight: Spotlight) -> None:
    with capture_spans(sentry_dsn=spotlight.dsn, sample_rate=0.0, constitution_hash=HASH):
        with pytest.raises(agent_trace.ConstitutionalViolationError):  # noqa: SIM117
            with agent_trace.session("review") as s, s.turn("ethics"):
                raise agent_trace.ConstitutionalViolationError("x", "privacy")
        agent_trace.force_flush(timeout_s=10.0)

    [event] = spotlight.wait_for_error_events(1)
    assert event["contexts"]["trace"]["trace_id"] == s.trace_id
    assert event["tags"]["violation_type"] == "privacy"
    assert normalization_problems(event) == []
    assert spotlight.transactions() == []


def test_raw_otel_values_do_not_cost_the_transaction(
    envelope_capture: CapturedSpans, spotlight: Spotlight
) -> None:
    # JSON has no bytes and no NaN: one such value set through the raw OpenTelemetry API
    # must not make the whole session's transaction unserialisable.
    with agent_trace.session("raw") as s, s.turn("ethics") as turn:
        turn.span.set_attributes(
            {"t.bytes": b"caf\xc3\xa9", "t.nan": float("nan"), "t.map": {"k": [1, 2]}}
        )
    assert agent_trace.force_flush(timeout_s=10.0) is True

    [transaction] = spotlight.wait_for_transactions(1)
    [span] = transaction["spans"]
    assert span["data"]["t.bytes"] == "café"
    assert span["data"]["t.nan"] == "NaN"
    assert span["data"]["t.map"] == {"k": [1, 2]}
    assert normalization_problems(transaction) == []

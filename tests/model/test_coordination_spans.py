"""Handoffs, conflicts, escalations and performance targets."""

# Nested `with` blocks here mirror the span tree under test; merging them would hide it.
# ruff: noqa: SIM117

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans

HASH = "cdd01ef066bc6cf2"


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans(constitution_hash=HASH) as captured:
        yield captured


def common(span_attrs: object, op: str) -> None:
    attrs = dict(span_attrs)  # type: ignore[call-overload]
    assert attrs["sentry.op"] == op
    assert attrs["agent_trace.constitution.hash"] == HASH
    assert attrs["gen_ai.conversation.id"] == "s"


def test_handoff_span(spans: CapturedSpans) -> None:
    with (
        agent_trace.session("review", session_id="s") as s,
        s.handoff("ethics", "legal", reason="needs legal review"),
    ):
        pass

    span = spans.one("handoff from ethics to legal")
    assert span.kind is SpanKind.INTERNAL
    assert spans.parent(span) is spans.one("invoke_workflow review")
    common(span.attributes, "gen_ai.handoff")
    assert span.attributes["gen_ai.operation.name"] == "handoff"
    assert span.attributes["agent_trace.handoff.target"] == "legal"
    assert span.attributes["agent_trace.handoff.reason"] == "needs legal review"


async def test_conflict_resolution_span(spans: CapturedSpans) -> None:
    async with agent_trace.session("review", session_id="s") as s:
        async with s.resolve_conflict(parties=["ethics", "ops"], strategy="weighted_override") as c:
            c.set_outcome("ethics_prevails")

    span = spans.one("resolve_conflict weighted_override")
    common(span.attributes, "agent_trace.conflict")
    assert list(span.attributes["agent_trace.conflict.parties"]) == ["ethics", "ops"]
    assert span.attributes["agent_trace.conflict.strategy"] == "weighted_override"
    assert span.attributes["agent_trace.conflict.outcome"] == "ethics_prevails"
    assert c.outcome == "ethics_prevails"


def test_escalation_span(spans: CapturedSpans) -> None:
    with agent_trace.session("review", session_id="s") as s:
        with s.escalate("deadlock", severity="high") as esc:
            esc.set_outcome("human_approved")

    span = spans.one("escalate deadlock")
    common(span.attributes, "agent_trace.escalation")
    assert span.attributes["agent_trace.escalation.trigger"] == "deadlock"
    assert span.attributes["agent_trace.escalation.severity"] == "high"
    assert span.attributes["agent_trace.escalation.outcome"] == "human_approved"
    assert span.status.status_code is StatusCode.UNSET


def test_met_performance_target_is_recorded_on_the_current_span(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s, s.turn("ethics"):
        met = agent_trace.monitor_performance_target("round_compute", 5.0, 3.2, unit="ms")

    assert met is True
    attrs = spans.one("invoke_agent ethics").attributes
    assert attrs["agent_trace.target.name"] == "round_compute"
    assert attrs["agent_trace.target.threshold"] == 5.0
    assert attrs["agent_trace.target.actual"] == 3.2
    assert attrs["agent_trace.target.unit"] == "ms"
    assert attrs["agent_trace.target.met"] is True
    assert "agent_trace.target.breaches" not in spans.metrics()


def test_breached_target_is_counted_but_never_an_error(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s, s.turn("ethics"):
        met = agent_trace.monitor_performance_target("round_compute", 5.0, 9.5)
        agent_trace.monitor_performance_target("round_compute", 5.0, 7.0)

    assert met is False
    turn = spans.one("invoke_agent ethics")
    assert turn.attributes["agent_trace.target.met"] is False
    assert turn.status.status_code is StatusCode.UNSET
    assert "error.type" not in turn.attributes
    assert spans.one("invoke_workflow review").status.status_code is StatusCode.UNSET
    assert spans.metrics()["agent_trace.target.breaches"] == [({"target": "round_compute"}, 2)]


@pytest.mark.parametrize(
    ("actual", "met"), [(5.0, True), (float("nan"), False), (float("inf"), False)]
)
def test_target_judgement_at_the_edges(spans: CapturedSpans, actual: float, met: bool) -> None:
    with agent_trace.session("review"):
        assert agent_trace.monitor_performance_target("t", 5.0, actual) is met


def test_target_outside_any_span_still_returns_the_judgement(spans: CapturedSpans) -> None:
    assert agent_trace.monitor_performance_target("t", 5.0, 1.0) is True
    assert agent_trace.monitor_performance_target("t", 5.0, 10.0) is False
    assert spans.spans == []


# -- agent messages -------------------------------------------------------------------------


def test_message_send_and_process_are_linked_producer_and_consumer(spans: CapturedSpans) -> None:
    with agent_trace.session("review", session_id="s") as s:
        with (
            s.turn("ethics"),
            s.send_message(
                "ethics", "legal", message_type="review_request", content="secret plan"
            ) as sent,
        ):
            headers = sent.headers()
        with s.turn("legal"), s.process_message("legal", headers, message_type="review_request"):
            pass

    send = spans.one("send legal")
    process = spans.one("process legal")
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    common(send.attributes, "agent_trace.message")
    common(process.attributes, "agent_trace.message")
    assert spans.parent(send) is spans.one("invoke_agent ethics")
    # Linked, not parented: the receiver's work stays in the receiver's turn.
    assert spans.parent(process) is spans.one("invoke_agent legal")
    [link] = process.links
    assert link.context.span_id == send.context.span_id
    assert send.attributes["agent_trace.message.type"] == "review_request"
    assert "agent_trace.message.content" not in send.attributes


async def test_module_level_message_functions_join_the_current_session(
    spans: CapturedSpans,
) -> None:
    async with agent_trace.session("review", session_id="s"):
        async with agent_trace.send_message("ethics", "ops", message_type="note") as sent:
            pass
        async with agent_trace.process_message("ops", sent):
            pass

    send = spans.one("send ops")
    process = spans.one("process ops")
    common(send.attributes, "agent_trace.message")
    common(process.attributes, "agent_trace.message")
    assert [link.context.span_id for link in process.links] == [send.context.span_id]

"""The same session reaches the real Spotlight sidecar, as Sentry would receive it, and Jaeger."""

from __future__ import annotations

import uuid

import pytest

import agent_trace
from tests.backends.jaeger import Jaeger, iter_spans
from tests.backends.relay import normalization_problems
from tests.backends.spotlight import Spotlight
from tests.integration.scenario import AGENTS, CONSTITUTION_HASH, run_reference_session

pytestmark = pytest.mark.integration


@pytest.fixture
def both_sinks(jaeger: Jaeger, spotlight: Spotlight):
    service = f"review-{uuid.uuid4().hex[:8]}"
    agent_trace.configure(
        service,
        otlp_endpoint=jaeger.otlp_grpc_endpoint,
        sentry_dsn=spotlight.dsn,
        constitution_hash=CONSTITUTION_HASH,
        local_file=False,
        _env={},
    )
    yield service
    agent_trace.shutdown(timeout_s=5)


def test_session_is_one_transaction_with_agent_turns_as_spans(
    both_sinks: str, spotlight: Spotlight, jaeger: Jaeger
) -> None:
    ids = run_reference_session(f"s-{uuid.uuid4().hex}")
    assert agent_trace.force_flush(timeout_s=10)

    [transaction] = spotlight.wait_for_transactions(1)
    assert normalization_problems(transaction) == []
    trace_ctx = transaction["contexts"]["trace"]
    assert trace_ctx["trace_id"] == ids.trace_id
    assert trace_ctx["op"] == "agent_trace.session"
    assert transaction["transaction"] == "invoke_workflow ethical_review"
    assert transaction["tags"]["constitutional_hash"] == CONSTITUTION_HASH

    turns = [s for s in transaction["spans"] if s["op"] == "gen_ai.invoke_agent"]
    assert sorted(s["description"] for s in turns) == sorted(f"invoke_agent {a}" for a in AGENTS)
    assert all(s["data"]["gen_ai.conversation.id"] == ids.session_id for s in turns)
    assert all(s["parent_span_id"] == trace_ctx["span_id"] for s in turns)
    # Every span of the session is in the one transaction: 3 turns, 2 rounds, 6 votes, 1 check.
    assert len(transaction["spans"]) == 12

    # The same ids in Jaeger.
    jaeger_trace = jaeger.wait_for_trace(ids.trace_id, min_spans=13)
    jaeger_ids = {s["spanID"] for s in iter_spans([jaeger_trace])}
    sentry_ids = {s["span_id"] for s in transaction["spans"]} | {trace_ctx["span_id"]}
    assert sentry_ids == jaeger_ids


def test_violation_is_one_error_event_linked_to_the_violating_span(
    both_sinks: str, spotlight: Spotlight, jaeger: Jaeger
) -> None:
    ids = run_reference_session(f"s-{uuid.uuid4().hex}")
    assert agent_trace.force_flush(timeout_s=10)

    [event] = spotlight.wait_for_error_events(1)
    assert normalization_problems(event) == []
    assert event["contexts"]["trace"]["trace_id"] == ids.trace_id
    assert event["contexts"]["trace"]["span_id"] == ids.violating_span_id
    assert event["tags"]["constitutional_hash"] == CONSTITUTION_HASH
    assert event["tags"]["violation_type"] == "privacy"
    assert event["tags"]["severity"] == "high"
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ConstitutionalViolationError"

    jaeger_trace = jaeger.wait_for_trace(ids.trace_id, min_spans=13)
    assert ids.violating_span_id in {s["spanID"] for s in iter_spans([jaeger_trace])}

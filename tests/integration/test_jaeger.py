"""A coordination session reaches the real Jaeger and looks there as DESIGN.md says."""

from __future__ import annotations

import json
import uuid

import pytest

import agent_trace
from tests.backends.jaeger import Jaeger, iter_spans, process_tags, span_tags
from tests.integration.scenario import AGENTS, CONSTITUTION_HASH, run_reference_session

pytestmark = pytest.mark.integration


@pytest.fixture(params=["grpc", "http"])
def traced_to_jaeger(request: pytest.FixtureRequest, jaeger: Jaeger):
    protocol = request.param
    service = f"review-{protocol}-{uuid.uuid4().hex[:8]}"
    endpoint = jaeger.otlp_grpc_endpoint if protocol == "grpc" else jaeger.otlp_http_traces_url
    agent_trace.configure(
        service,
        otlp_endpoint=endpoint,
        otlp_protocol=protocol,
        constitution_hash=CONSTITUTION_HASH,
        local_file=False,
        _env={},
    )
    yield service
    agent_trace.shutdown(timeout_s=5)


def test_session_is_found_by_service_and_by_constitution_hash(
    traced_to_jaeger: str, jaeger: Jaeger
) -> None:
    ids = run_reference_session(f"s-{uuid.uuid4().hex}")
    assert agent_trace.force_flush(timeout_s=10)
    jaeger.wait_for_trace(ids.trace_id, min_spans=13)

    [by_service] = jaeger.find_traces(traced_to_jaeger)
    assert by_service["traceID"] == ids.trace_id
    by_tag = jaeger.find_traces(
        traced_to_jaeger, tags={"agent_trace.constitution.hash": CONSTITUTION_HASH}
    )
    assert [t["traceID"] for t in by_tag] == [ids.trace_id]


def test_span_tree_names_kinds_attributes_and_error(
    traced_to_jaeger: str, jaeger: Jaeger
) -> None:
    ids = run_reference_session(f"s-{uuid.uuid4().hex}")
    assert agent_trace.force_flush(timeout_s=10)
    trace = jaeger.wait_for_trace(ids.trace_id, min_spans=13)

    assert not trace.get("warnings"), trace.get("warnings")
    spans = {s["spanID"]: s for s in iter_spans([trace])}
    parent_of = {
        sid: next((r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"), None)
        for sid, s in spans.items()
    }
    # No orphans: every referenced parent is in the trace.
    assert all(p is None or p in spans for p in parent_of.values())
    [root] = [s for sid, s in spans.items() if parent_of[sid] is None]
    assert root["operationName"] == "invoke_workflow ethical_review"
    assert root["process"]["serviceName"] == traced_to_jaeger
    assert process_tags(root)["telemetry.distro.name"] == "agent-trace"

    def children(span_id: str) -> list[dict]:
        return sorted(
            (s for sid, s in spans.items() if parent_of[sid] == span_id),
            key=lambda s: s["startTime"],
        )

    names = [s["operationName"] for s in children(root["spanID"])]
    assert names == [
        *(f"invoke_agent {a}" for a in AGENTS),
        "consensus_round weighted_vote",
        "consensus_round weighted_vote",
        "policy_check privacy",
    ]
    for span in spans.values():
        tags = span_tags(span)
        assert tags["agent_trace.constitution.hash"] == CONSTITUTION_HASH
        assert tags["gen_ai.conversation.id"] == ids.session_id
        assert tags["sentry.op"]
        assert tags["span.kind"] == "internal"

    rounds = [s for s in children(root["spanID"]) if s["operationName"].startswith("consensus")]
    outcomes = [span_tags(r)["agent_trace.consensus.outcome"] for r in rounds]
    assert outcomes == ["no_consensus", "consensus"]
    legal_votes = [
        span_tags(v)["agent_trace.vote.value"]
        for r in rounds
        for v in children(r["spanID"])
        if span_tags(v)["gen_ai.agent.name"] == "legal"
    ]
    assert legal_votes == ["reject", "approve"]
    assert json.loads(span_tags(root)["agent_trace.session.agents"]) == list(AGENTS)

    check = spans[ids.violating_span_id]
    check_tags = span_tags(check)
    assert check_tags["otel.status_code"] == "ERROR"
    assert check_tags["error"] is True
    assert check_tags["error.type"] == "constitutional_violation"
    assert check_tags["agent_trace.compliance.violation.type"] == "privacy"
    assert check_tags["agent_trace.compliance.severity"] == "high"
    assert any(f["key"] == "event" and f["value"] == "exception"
               for log in check["logs"] for f in log["fields"])
    # The violation was handled inside the session: the root is not an error.
    assert "otel.status_code" not in span_tags(root)
    assert span_tags(root)["agent_trace.session.outcome"] == "blocked"

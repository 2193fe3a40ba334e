"""The OTLP sink over gRPC and HTTP, read back at local recorders and compared with what was sent.

The testing kit's memory sink gets the span objects the OTLP sink exports, so the decoded
protobuf spans must equal them field by field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import ReadableSpan

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans
from tests.backends.otlp_recorder import (
    OtlpGrpcRecorder,
    OtlpHttpRecorder,
    attributes_of,
    spans_of,
)

pytestmark = pytest.mark.integration

HASH = "cdd01ef066bc6cf2"


def run_coordination() -> None:
    with agent_trace.session("ethical_review", agents=["ethics", "legal"]) as s:
        with s.turn("ethics", role="reviewer") as turn:
            turn.set_attribute("app.password", "hunter2")
        with s.turn("legal", remote=True):
            pass
        with s.consensus_round("weighted_vote", participants=["ethics", "legal"]) as rnd:
            rnd.vote("ethics", "approve", weight=2.0)
            rnd.vote("legal", "reject")
        try:
            with s.policy_check("privacy"):
                raise agent_trace.ConstitutionalViolationError("x", "privacy")
        except agent_trace.ConstitutionalViolationError:
            s.set_outcome("blocked")


def plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def assert_equal_spans(received: list[trace_pb2.Span], sent: list[ReadableSpan]) -> None:
    assert len(received) == len(sent)
    by_id = {span.span_id: span for span in received}
    for span in sent:
        got = by_id[span.context.span_id.to_bytes(8, "big")]
        assert got.trace_id == span.context.trace_id.to_bytes(16, "big")
        expected_parent = b"" if span.parent is None else span.parent.span_id.to_bytes(8, "big")
        assert got.parent_span_id == expected_parent
        assert got.name == span.name
        # protobuf SpanKind is the SDK's value plus one (0 is UNSPECIFIED there).
        assert got.kind == span.kind.value + 1
        assert got.start_time_unix_nano == span.start_time
        assert got.end_time_unix_nano == span.end_time
        assert got.status.code == span.status.status_code.value
        assert attributes_of(got) == {k: plain(v) for k, v in span.attributes.items()}
        assert [e.name for e in got.events] == [e.name for e in span.events]


def resource_of(request: Any) -> dict[str, Any]:
    [resource_spans] = request.resource_spans
    return {a.key: a.value.string_value for a in resource_spans.resource.attributes}


@pytest.fixture
def grpc_captured(otlp_grpc_recorder: OtlpGrpcRecorder) -> Iterator[CapturedSpans]:
    with capture_spans(
        "otlp-grpc-test",
        otlp_endpoint=otlp_grpc_recorder.endpoint,
        otlp_protocol="grpc",
        otlp_headers={"x-tenant": "governance"},
        constitution_hash=HASH,
    ) as captured:
        yield captured


def test_grpc_recorder_receives_exactly_the_spans_sent(
    grpc_captured: CapturedSpans, otlp_grpc_recorder: OtlpGrpcRecorder
) -> None:
    run_coordination()
    assert agent_trace.force_flush(timeout_s=10.0) is True

    calls = otlp_grpc_recorder.calls
    assert calls
    received = [span for call in calls for span in call.spans]
    assert_equal_spans(received, grpc_captured.spans)
    assert resource_of(calls[0].request)["service.name"] == "otlp-grpc-test"
    assert calls[0].metadata_value("x-tenant") == "governance"
    by_name = {s.name: attributes_of(s) for s in received}
    assert by_name["invoke_agent ethics"]["app.password"] == "[REDACTED]"
    assert by_name["invoke_agent ethics"]["agent_trace.constitution.hash"] == HASH


@pytest.fixture
def http_captured(otlp_http_recorder: OtlpHttpRecorder) -> Iterator[CapturedSpans]:
    with capture_spans(
        "otlp-http-test",
        otlp_endpoint=otlp_http_recorder.traces_url,
        otlp_protocol="http",
        otlp_headers={"x-tenant": "governance"},
        constitution_hash=HASH,
    ) as captured:
        yield captured


def trace_requests(recorder: OtlpHttpRecorder) -> list[Any]:
    return [r for r in recorder.requests if r.path == "/v1/traces"]


def test_http_recorder_receives_exactly_the_spans_sent(
    http_captured: CapturedSpans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    run_coordination()
    assert agent_trace.force_flush(timeout_s=10.0) is True

    requests = trace_requests(otlp_http_recorder)
    assert requests
    for request in requests:
        assert request.method == "POST"
        assert request.header("Content-Type") == "application/x-protobuf"
        assert request.header("x-tenant") == "governance"
    received = [span for request in requests for span in request.spans]
    assert_equal_spans(received, http_captured.spans)
    assert resource_of(requests[0].decoded)["service.name"] == "otlp-http-test"


def test_http_endpoint_from_the_environment_gets_the_traces_path(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_http_recorder.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc",
    }
    with capture_spans("env-http", _env=env) as captured:
        with agent_trace.session("review"):
            pass
        assert agent_trace.force_flush(timeout_s=10.0) is True

        [request] = trace_requests(otlp_http_recorder)
        assert request.header("authorization") == "Bearer abc"
        assert_equal_spans(request.spans, captured.spans)


def test_many_sessions_arrive_in_batches_without_loss(
    otlp_grpc_recorder: OtlpGrpcRecorder,
) -> None:
    with capture_spans(
        otlp_endpoint=otlp_grpc_recorder.endpoint, max_export_batch_size=100
    ) as captured:
        for i in range(250):
            with agent_trace.session("bulk", session_id=f"b{i}") as s, s.turn("a"):
                pass
        assert agent_trace.force_flush(timeout_s=10.0) is True

        received = otlp_grpc_recorder.spans()
        assert len(otlp_grpc_recorder.calls) >= 5
        assert all(len(spans_of(c.request)) <= 100 for c in otlp_grpc_recorder.calls)
        assert {s.span_id for s in received} == {
            s.context.span_id.to_bytes(8, "big") for s in captured.spans
        }
        assert len(received) == 500

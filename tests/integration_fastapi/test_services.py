"""Instrumented FastAPI services in real uvicorn processes, read back from Jaeger and Spotlight."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import httpx
import pytest

import agent_trace
from agent_trace.integrations.httpx import instrument_client
from tests.backends.jaeger import Jaeger, JaegerSpan, JaegerTrace, iter_spans, span_tags
from tests.backends.spotlight import Spotlight
from tests.integration_fastapi.conftest import (
    HASH,
    Service,
    http_get,
    raw_request,
)

pytestmark = pytest.mark.integration

ONE_MB = 1024 * 1024


def new_traceparent() -> tuple[str, str, str]:
    """A fresh (traceparent, trace id, parent span id) to send with a request."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def spans_of(trace: JaegerTrace, service: str | None = None) -> list[JaegerSpan]:
    spans = iter_spans([trace])
    return [s for s in spans if service is None or s["process"]["serviceName"] == service]


def one(spans: list[JaegerSpan], operation: str) -> JaegerSpan:
    found = [s for s in spans if s["operationName"] == operation]
    assert len(found) == 1, (operation, [s["operationName"] for s in spans])
    return found[0]


def parent_id(span: JaegerSpan) -> str | None:
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


def end_us(span: JaegerSpan) -> int:
    return int(span["startTime"]) + int(span["duration"])


def event_names(span: JaegerSpan) -> list[str]:
    names = []
    for log in span.get("logs", []):
        fields = {f["key"]: f["value"] for f in log["fields"]}
        names.append(str(fields.get("event")))
    return names


def instrumented_client(**kwargs: Any) -> httpx.AsyncClient:
    return instrument_client(httpx.AsyncClient(timeout=10.0, **kwargs))


# -- traces across processes ---------------------------------------------------------------------


async def test_two_concurrent_sessions_through_one_keep_alive_client_never_share_a_trace(
    coordinator: str, enforce_service: Service, jaeger: Jaeger
) -> None:
    # One connection in the pool: both sessions' calls go through the same keep-alive socket.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def review(client: httpx.AsyncClient, name: str) -> tuple[str, str, dict[str, Any]]:
        async with (
            agent_trace.session("review", session_id=name) as s,
            s.turn("legal", remote=True) as turn,
        ):
            response = await client.post(f"{enforce_service.url}/turn")
            assert response.status_code == 200
            return s.trace_id, turn.span_id, response.json()

    async with instrumented_client(limits=limits) as client:
        results = await asyncio.gather(*(review(client, f"s-{i}") for i in range(4)))
    assert agent_trace.force_flush(timeout_s=10)

    assert len({trace_id for trace_id, _, _ in results}) == 4
    assert len({seen["client_port"] for _, _, seen in results}) == 1
    for trace_id, turn_id, seen in results:
        assert (seen["trace_id"], seen["parent_span_id"]) == (trace_id, turn_id)
        trace = jaeger.wait_for_trace(trace_id, min_spans=4)
        server = one(spans_of(trace, enforce_service.name), "POST /turn")
        assert server["spanID"] == seen["span_id"]
        assert parent_id(server) == turn_id
        assert len(spans_of(trace)) == 4, [s["operationName"] for s in spans_of(trace)]


async def test_a_background_task_span_is_linked_to_the_request_and_outlives_it(
    enforce_service: Service, jaeger: Jaeger
) -> None:
    response = enforce_service.request("POST", "/background")
    assert response.status == 200
    seen = response.json()

    request_trace = jaeger.wait_for_trace(seen["trace_id"], min_spans=1)
    request = one(spans_of(request_trace), "POST /background")
    [task] = jaeger.wait_for_spans(
        enforce_service.name, 1, operation="background_task record_audit", timeout_s=15
    )
    assert task["traceID"] != seen["trace_id"]
    assert parent_id(task) is None
    assert [(r["refType"], r["traceID"], r["spanID"]) for r in task["references"]] == [
        ("FOLLOWS_FROM", seen["trace_id"], seen["span_id"])
    ]
    # The task sleeps 300 ms after the response went out; none of it is in the request span.
    assert end_us(request) <= int(task["startTime"])
    assert int(request["duration"]) < 300_000 <= int(task["duration"])

    task_trace = jaeger.wait_for_trace(task["traceID"], min_spans=2)
    audit = one(spans_of(task_trace), "policy_check audit")
    assert parent_id(audit) == task["spanID"]


async def test_a_streamed_response_stays_in_the_trace_and_its_span_ends_after_the_last_chunk(
    coordinator: str, enforce_service: Service, jaeger: Jaeger
) -> None:
    chunks: list[str] = []
    async with (
        instrumented_client() as client,
        agent_trace.session("review") as s,
        s.turn("ethics", remote=True) as turn,
        client.stream("GET", f"{enforce_service.url}/stream") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            # The partial-output events are "data: INDEX SPAN_ID TIME_NS"; the first event
            # (named "ids") has two fields.
            if line.startswith("data: ") and len(line.split()) == 4:
                chunks.append(line[6:])
    assert agent_trace.force_flush(timeout_s=10)

    assert len(chunks) == 3
    trace = jaeger.wait_for_trace(s.trace_id, min_spans=6)
    server = one(spans_of(trace, enforce_service.name), "GET /stream")
    assert parent_id(server) == turn.span_id
    parts = [x for x in spans_of(trace, enforce_service.name) if x["spanID"] != server["spanID"]]
    assert sorted(p["spanID"] for p in parts) == sorted(c.split()[1] for c in chunks)
    assert all(parent_id(p) == server["spanID"] for p in parts)
    last_chunk_us = max(int(c.split()[2]) for c in chunks) // 1000
    assert end_us(server) >= last_chunk_us
    assert all(end_us(server) >= end_us(p) for p in parts)


# -- errors --------------------------------------------------------------------------------------


async def test_an_endpoint_that_raises_is_an_error_span_and_one_linked_sentry_event(
    enforce_service: Service, jaeger: Jaeger, spotlight: Spotlight
) -> None:
    handled_parent, handled_trace, _ = new_traceparent()
    failing_parent, failing_trace, _ = new_traceparent()

    handled = enforce_service.request("GET", "/reject", {"traceparent": handled_parent})
    failed = enforce_service.request("GET", "/fail", {"traceparent": failing_parent})
    assert (handled.status, failed.status) == (400, 500)

    [event] = spotlight.wait_for_error_events(1, timeout_s=15)
    failing = one(spans_of(jaeger.wait_for_trace(failing_trace)), "GET /fail")
    tags = span_tags(failing)
    assert tags["otel.status_code"] == "ERROR" and tags["error"] is True
    assert tags["http.status_code"] == 500
    assert event_names(failing).count("exception") == 1

    assert event["contexts"]["trace"]["trace_id"] == failing_trace
    assert event["contexts"]["trace"]["span_id"] == failing["spanID"]
    assert event["tags"]["constitutional_hash"] == HASH
    [exception] = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"

    rejected = one(spans_of(jaeger.wait_for_trace(handled_trace)), "GET /reject")
    assert "error" not in span_tags(rejected)
    assert "otel.status_code" not in span_tags(rejected)
    assert event_names(rejected) == []
    # Nothing more arrives for the 400 once the 500's event is there.
    time.sleep(1.0)
    assert len(spotlight.error_events()) == 1


# -- the Constitutional-Hash header --------------------------------------------------------------


HEADER_CASES: dict[str, list[tuple[bytes, bytes]]] = {
    "missing": [],
    "different": [(b"Constitutional-Hash", b"0" * 16)],
    "one megabyte": [(b"Constitutional-Hash", b"7" * ONE_MB)],
    "binary garbage": [(b"Constitutional-Hash", bytes(range(0x80, 0x100)) + b"\x01<script>")],
    "two lines": [(b"Constitutional-Hash", HASH.encode()), (b"Constitutional-Hash", HASH.encode())],
}


def send_case(service: Service, case: str) -> tuple[int | None, bytes, str]:
    traceparent, trace_id, _ = new_traceparent()
    headers = [(b"traceparent", traceparent.encode()), *HEADER_CASES[case]]
    status, body = raw_request(service.port, http_get("/whoami", service.port, headers))
    return status, body, trace_id


def violation_check(
    jaeger: Jaeger, trace_id: str, service: Service
) -> tuple[JaegerSpan, JaegerSpan]:
    trace = jaeger.wait_for_trace(trace_id, min_spans=2)
    server = one(spans_of(trace, service.name), "GET /whoami")
    check = one(spans_of(trace, service.name), "policy_check constitutional_hash")
    assert parent_id(check) == server["spanID"]
    assert span_tags(check)["agent_trace.compliance.result"] == "violation"
    assert "error" not in span_tags(server)
    return server, check


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_enforce_refuses_a_bad_hash_with_json_and_records_the_violation(
    enforce_service: Service, jaeger: Jaeger, case: str
) -> None:
    status, body, trace_id = send_case(enforce_service, case)

    expected_status = 428 if case == "missing" else 409
    assert status == expected_status
    assert len(body) < 1024
    answer = json.loads(body)
    assert answer["error"] == (
        "constitutional_hash_missing" if case == "missing" else "constitutional_hash_mismatch"
    )
    assert answer["expected_form"].startswith("Constitutional-Hash: <16 lowercase hex digits>")
    if case != "missing":
        sent = HEADER_CASES[case][0][1]
        assert len(answer["received"]) == min(64, len(sent))
        assert answer["received_length"] == len(sent)

    server, check = violation_check(jaeger, trace_id, enforce_service)
    assert span_tags(server)["http.status_code"] == expected_status
    assert span_tags(check)["agent_trace.compliance.enforcement"] == "block"


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_observe_lets_a_bad_hash_through_and_records_the_violation(
    observe_service: Service, jaeger: Jaeger, case: str
) -> None:
    status, body, trace_id = send_case(observe_service, case)

    assert status == 200
    assert json.loads(body)["trace_id"] == trace_id
    server, check = violation_check(jaeger, trace_id, observe_service)
    assert span_tags(server)["http.status_code"] == 200
    assert span_tags(check)["agent_trace.compliance.enforcement"] == "observe"


def test_the_right_hash_passes_in_enforce_mode_without_a_violation(
    enforce_service: Service, jaeger: Jaeger
) -> None:
    traceparent, trace_id, _ = new_traceparent()
    response = enforce_service.request("GET", "/whoami", {"traceparent": traceparent})

    assert response.status == 200
    trace = jaeger.wait_for_trace(trace_id)
    time.sleep(0.5)  # give a (wrong) check span the time to arrive too
    trace = jaeger.wait_for_trace(trace_id)
    assert [s["operationName"] for s in spans_of(trace)] == ["GET /whoami"]
    assert span_tags(spans_of(trace)[0])["agent_trace.constitution.header"] == "match"


# -- incoming trace headers ----------------------------------------------------------------------


VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BAD_TRACE_HEADERS: dict[str, list[tuple[bytes, bytes]]] = {
    "malformed": [(b"traceparent", b"00-0af7651916cd43dd-zz-01")],
    "oversized": [(b"traceparent", VALID.encode() + b"-" + b"f" * 8000)],
    "two lines": [(b"traceparent", VALID.encode()), (b"traceparent", VALID.encode())],
    "two sentry-trace lines": [
        (b"sentry-trace", b"0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"),
        (b"sentry-trace", b"0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"),
    ],
    "binary": [(b"traceparent", bytes(range(0x80, 0xB7)))],
}


@pytest.mark.parametrize("case", list(BAD_TRACE_HEADERS))
def test_malformed_oversized_or_duplicated_trace_headers_start_a_fresh_trace(
    enforce_service: Service, jaeger: Jaeger, case: str
) -> None:
    headers = [(b"Constitutional-Hash", HASH.encode()), *BAD_TRACE_HEADERS[case]]
    request = http_get("/whoami", enforce_service.port, headers)
    status, body = raw_request(enforce_service.port, request)

    assert status == 200
    seen = json.loads(body)
    assert seen["parent_span_id"] is None
    assert seen["trace_id"] != VALID.split("-")[1]
    trace = jaeger.wait_for_trace(seen["trace_id"])
    [server] = spans_of(trace)
    assert server["references"] == []


def test_a_valid_traceparent_makes_the_server_span_a_child(
    enforce_service: Service, jaeger: Jaeger
) -> None:
    traceparent, trace_id, span_id = new_traceparent()
    seen = enforce_service.request("GET", "/whoami", {"traceparent": traceparent}).json()

    assert (seen["trace_id"], seen["parent_span_id"]) == (trace_id, span_id)
    [server] = spans_of(jaeger.wait_for_trace(trace_id))
    assert parent_id(server) == span_id


def test_baggage_from_outside_never_becomes_span_tags(
    enforce_service: Service, jaeger: Jaeger
) -> None:
    traceparent, trace_id, _ = new_traceparent()
    response = enforce_service.request(
        "POST",
        "/turn",
        {
            "traceparent": traceparent,
            "baggage": "user.email=alice%40example.com,tenant=acme-corp,sentry-release=9.9",
        },
    )
    assert response.status == 200

    trace = jaeger.wait_for_trace(trace_id, min_spans=2)
    for span in spans_of(trace):
        text = json.dumps(span["tags"])
        assert "alice" not in text and "acme-corp" not in text and "9.9" not in text
        assert not [k for k in span_tags(span) if k.startswith(("user.", "tenant", "baggage"))]


# -- health --------------------------------------------------------------------------------------


def test_health_answers_service_hash_and_sink_states_and_is_not_traced(
    enforce_service: Service, jaeger: Jaeger
) -> None:
    # No hash header: the health route is not subject to the rule it reports on.
    health = enforce_service.request("GET", "/health", {"Constitutional-Hash": ""})
    assert health.status == 200
    assert health.json() == {
        "status": "ok",
        "service": enforce_service.name,
        "constitutional_hash": HASH,
        "constitutional_hash_mode": "enforce",
        "sinks": {"otlp": "ok", "sentry": "ok"},
    }

    # A request after it is in Jaeger; had the health check been traced, it would be too.
    traceparent, trace_id, _ = new_traceparent()
    enforce_service.request("GET", "/whoami", {"traceparent": traceparent})
    jaeger.wait_for_trace(trace_id)
    assert jaeger.find_traces(enforce_service.name, operation="GET /health") == []

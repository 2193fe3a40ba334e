"""`agent_trace.integrations.fastapi.instrument`, driven in process through httpx's ASGI transport.

The same behaviour through real uvicorn processes, Jaeger and Spotlight is tested in
tests/integration_fastapi/.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import agent_trace
from agent_trace.integrations.fastapi import instrument
from agent_trace.testing import CapturedSpans, capture_spans
from tests.integrations.conftest import HASH, RecordingSentry

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
VALID_TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def build_app() -> FastAPI:
    """A small agent service: plain, failing, refusing, streaming and background endpoints."""
    app = FastAPI()
    finished: list[float] = []
    app.state.background_finished = finished

    @app.get("/ok")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the agent fell over")

    @app.get("/bad-request")
    async def bad_request() -> None:
        raise HTTPException(status_code=400, detail="proposal is empty")

    @app.get("/with-background")
    async def with_background(tasks: BackgroundTasks) -> dict[str, str]:
        async def write_audit_log() -> None:
            with agent_trace.policy_check("audit"):
                await asyncio.sleep(0.05)
            finished.append(time.time_ns())

        tasks.add_task(write_audit_log)
        return {"scheduled": "audit"}

    @app.get("/failing-background")
    async def failing_background(tasks: BackgroundTasks) -> dict[str, str]:
        async def lose_the_audit_log() -> None:
            raise OSError("disk full")

        tasks.add_task(lose_the_audit_log)
        return {"scheduled": "audit"}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def partial_output() -> AsyncIterator[str]:
            for index in range(3):
                with agent_trace.turn("ethics", role=f"chunk-{index}"):
                    await asyncio.sleep(0.01)
                yield f"data: part {index}\n\n"

        return StreamingResponse(partial_output(), media_type="text/event-stream")

    return app


def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://agent.test")


def server_spans(captured: CapturedSpans) -> list[ReadableSpan]:
    return [s for s in captured.spans if s.kind is SpanKind.SERVER]


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


# -- spans per request ---------------------------------------------------------------------------


async def test_instrumenting_twice_still_gives_one_server_span_per_request(
    captured: CapturedSpans,
) -> None:
    app = build_app()
    assert instrument(app) is app
    assert instrument(app, constitutional_hash_mode="enforce") is app

    async with client_for(app) as client:
        assert (await client.get("/ok")).status_code == 200
        assert (await client.get("/ok")).status_code == 200

    assert [s.name for s in captured.spans] == ["GET /ok", "GET /ok"]
    assert all(s.kind is SpanKind.SERVER and s.parent is None for s in captured.spans)


async def test_a_request_whose_stack_was_built_before_instrument_is_traced(
    captured: CapturedSpans,
) -> None:
    app = build_app()
    async with client_for(app) as client:
        await client.get("/ok")
        captured.clear()
        instrument(app)
        await client.get("/ok")

    [span] = captured.spans
    assert span.name == "GET /ok"
    assert (span.attributes or {})["agent_trace.constitution.hash"] == HASH


async def test_no_span_is_made_per_asgi_send_or_receive(captured: CapturedSpans) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        await client.post("/echo", json={"proposal": "share data"})
        await client.get("/stream")

    names = [s.name for s in captured.spans]
    assert not [n for n in names if n.endswith((" send", " receive"))], names
    assert len(server_spans(captured)) == 2


async def test_server_span_carries_the_constitution_hash_and_sentry_op(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        await client.get("/ok")

    [span] = captured.spans
    assert span.attributes is not None
    assert span.attributes["agent_trace.constitution.hash"] == HASH
    assert span.attributes["sentry.op"] == "http.server"


# -- excluded URLs -------------------------------------------------------------------------------


async def test_excluded_urls_given_as_argument_are_not_traced(captured: CapturedSpans) -> None:
    app = instrument(build_app(), excluded_urls=["/echo$", "/bad-request"])
    async with client_for(app) as client:
        await client.post("/echo", json={})
        await client.get("/bad-request")
        await client.get("/ok")

    assert [s.name for s in captured.spans] == ["GET /ok"]


async def test_excluded_urls_come_from_the_environment_variable(
    captured: CapturedSpans, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "agent.test/ok")
    app = instrument(build_app())
    async with client_for(app) as client:
        await client.get("/ok")
        await client.post("/echo", json={})

    assert [s.name for s in captured.spans] == ["POST /echo"]


async def test_a_trailing_comma_in_excluded_urls_does_not_exclude_everything(
    captured: CapturedSpans, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "/stream,")
    app = instrument(build_app())
    async with client_for(app) as client:
        await client.get("/ok")

    assert [s.name for s in captured.spans] == ["GET /ok"]


async def test_excluded_urls_are_not_checked_for_the_constitutional_hash(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app(), excluded_urls="/ok", constitutional_hash_mode="enforce")
    async with client_for(app) as client:
        response = await client.get("/ok")

    assert response.status_code == 200
    assert captured.spans == []


def build_proposals_app() -> FastAPI:
    """An app whose path parameter can spell an excluded path: /proposals/metrics."""
    app = FastAPI()

    @app.get("/metrics")
    async def metrics() -> dict[str, str]:
        return {"requests": "1"}

    @app.get("/proposals/{pid}")
    async def proposal(pid: str) -> dict[str, str]:
        return {"pid": pid}

    return app


async def test_an_excluded_url_exempts_only_the_whole_path_it_matches_from_the_hash_check(
    captured: CapturedSpans,
) -> None:
    app = instrument(
        build_proposals_app(), excluded_urls=["/metrics"], constitutional_hash_mode="enforce"
    )
    async with client_for(app) as client:
        exempt = await client.get("/metrics")
        by_parameter = await client.get("/proposals/metrics")
        by_suffix = await client.get("/metrics/extra")
        by_query = await client.get("/proposals/p-1?next=/metrics")

    assert exempt.status_code == 200
    assert [by_parameter.status_code, by_suffix.status_code, by_query.status_code] == [428] * 3


async def test_tracing_exclusions_keep_opentelemetrys_search_but_the_check_still_runs(
    captured: CapturedSpans,
) -> None:
    app = instrument(
        build_proposals_app(), excluded_urls=["/metrics"], constitutional_hash_mode="enforce"
    )
    async with client_for(app) as client:
        response = await client.get("/proposals/metrics")

    assert response.status_code == 428
    assert server_spans(captured) == []
    assert len(violation_checks(captured)) == 1


async def test_excluding_the_index_page_exempts_the_index_page_alone(
    captured: CapturedSpans,
) -> None:
    app = build_app()

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"service": "agent"}

    app = instrument(app, excluded_urls=["/"], constitutional_hash_mode="enforce")
    async with client_for(app) as client:
        index_page = await client.get("/")
        other = await client.get("/ok")

    assert index_page.status_code == 200
    assert other.status_code == 428


async def test_an_excluded_url_written_with_anchors_exempts_its_path(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app(), excluded_urls=["^/ok$"], constitutional_hash_mode="enforce")
    async with client_for(app) as client:
        response = await client.get("/ok")

    assert response.status_code == 200


# -- errors --------------------------------------------------------------------------------------


async def test_an_unhandled_exception_marks_the_server_span_error_and_reports_once(
    captured: CapturedSpans, sentry: RecordingSentry
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        response = await client.get("/boom")

    assert response.status_code == 500
    [span] = captured.spans
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["http.status_code"] == 500
    assert span.attributes["error.type"] == "RuntimeError"
    exceptions = [e for e in span.events if e.name == "exception"]
    assert len(exceptions) == 1
    assert exceptions[0].attributes is not None
    assert exceptions[0].attributes["exception.type"] == "RuntimeError"

    [event] = sentry.events
    assert isinstance(event.exception, RuntimeError)
    assert span.context is not None
    assert (event.trace_id, event.span_id) == (span.context.trace_id, span.context.span_id)
    assert event.tags["constitutional_hash"] == HASH


async def test_an_exception_message_stays_out_of_the_span_status_without_content_capture(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        await client.get("/boom")

    [span] = captured.spans
    assert "fell over" not in (span.status.description or "")


async def test_a_handled_400_is_not_an_error(
    captured: CapturedSpans, sentry: RecordingSentry
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        response = await client.get("/bad-request")

    assert response.status_code == 400
    [span] = captured.spans
    assert span.status.status_code is StatusCode.UNSET
    assert not [e for e in span.events if e.name == "exception"]
    assert sentry.events == []


async def test_a_violation_raised_through_a_policy_check_is_reported_once(
    captured: CapturedSpans, sentry: RecordingSentry
) -> None:
    app = instrument(FastAPI())

    @app.post("/decide")
    async def decide() -> None:
        with agent_trace.policy_check("privacy"):
            raise agent_trace.ConstitutionalViolationError("shares health data", "privacy")

    async with client_for(app) as client:
        response = await client.post("/decide")

    assert response.status_code == 500
    [event] = sentry.events
    check = captured.one("policy_check privacy")
    assert check.context is not None
    assert event.span_id == check.context.span_id
    server = captured.one("POST /decide")
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["error.type"] == "constitutional_violation"


# -- background tasks ----------------------------------------------------------------------------


async def test_a_background_task_gets_its_own_span_linked_to_the_request(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        response = await client.get("/with-background")

    assert response.status_code == 200
    request = captured.one("GET /with-background")
    task = captured.one("background_task write_audit_log")
    assert request.context is not None and task.context is not None
    assert task.parent is None
    assert task.context.trace_id != request.context.trace_id
    assert [link.context.span_id for link in task.links] == [request.context.span_id]
    assert [link.context.trace_id for link in task.links] == [request.context.trace_id]
    # Work inside the task belongs to the task's span.
    check = captured.one("policy_check audit")
    assert check.parent is not None and check.parent.span_id == task.context.span_id


async def test_the_request_span_ends_before_its_background_task_runs(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        await client.get("/with-background")

    request = captured.one("GET /with-background")
    task = captured.one("background_task write_audit_log")
    assert request.end_time is not None and task.start_time is not None
    assert request.end_time <= task.start_time
    # The task sleeps 50 ms; the request span must not contain that time.
    assert request.end_time - (request.start_time or 0) < 40_000_000
    assert app.state.background_finished[0] >= task.start_time


async def test_a_failing_background_task_marks_its_own_span_and_reports_once(
    captured: CapturedSpans, sentry: RecordingSentry
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        response = await client.get("/failing-background")

    assert response.status_code == 200
    request = captured.one("GET /failing-background")
    task = captured.one("background_task lose_the_audit_log")
    assert request.status.status_code is StatusCode.UNSET
    assert task.status.status_code is StatusCode.ERROR
    assert [e.name for e in task.events] == ["exception"]
    [event] = sentry.events
    assert task.context is not None
    assert event.span_id == task.context.span_id


# -- streaming -----------------------------------------------------------------------------------


async def test_a_streamed_response_keeps_its_spans_in_the_request_trace(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        response = await client.get("/stream")

    assert response.text.count("data: part") == 3
    request = captured.one("GET /stream")
    chunks = captured.children(request)
    assert [c.name for c in chunks] == ["invoke_agent ethics"] * 3
    assert request.end_time is not None
    assert all(c.end_time is not None and c.end_time <= request.end_time for c in chunks)


# -- the Constitutional-Hash header --------------------------------------------------------------


def violation_checks(captured: CapturedSpans) -> list[ReadableSpan]:
    return captured.find(
        "policy_check constitutional_hash", agent_trace__compliance__result="violation"
    )


async def test_enforce_lets_the_right_hash_through_without_a_check_span(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app(), constitutional_hash_mode="enforce")
    async with client_for(app) as client:
        response = await client.get("/ok", headers={"Constitutional-Hash": HASH.upper()})

    assert response.status_code == 200
    [span] = captured.spans
    assert span.attributes is not None
    assert span.attributes["agent_trace.constitution.header"] == "match"


async def test_every_header_check_is_counted_passes_and_violations_alike(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app(), constitutional_hash_mode="observe")
    async with client_for(app) as client:
        await client.get("/ok", headers={"Constitutional-Hash": HASH})
        await client.get("/ok", headers={"Constitutional-Hash": HASH})
        await client.get("/ok")

    counts = {
        attrs["result"]: value
        for attrs, value in captured.metrics()["agent_trace.compliance.checks"]
        if attrs["policy"] == "constitutional_hash"
    }
    assert counts == {"compliant": 2, "violation": 1}


def header_check_counts(captured: CapturedSpans) -> dict[str, int]:
    return {
        str(attrs["result"]): int(value)
        for attrs, value in captured.metrics().get("agent_trace.compliance.checks", [])
        if attrs["policy"] == "constitutional_hash"
    }


async def test_header_checks_are_counted_when_the_request_is_sampled_out() -> None:
    with capture_spans("agent-service", constitution_hash=HASH, sample_rate=0.0) as captured:
        app = instrument(build_app(), constitutional_hash_mode="enforce")
        async with client_for(app) as client:
            await client.get("/ok", headers={"Constitutional-Hash": HASH})
            await client.get("/ok", headers={"Constitutional-Hash": HASH})
            await client.get("/ok")

        assert server_spans(captured) == []
        assert header_check_counts(captured) == {"compliant": 2, "violation": 1}


async def test_header_checks_are_counted_under_a_callers_unsampled_traceparent(
    captured: CapturedSpans,
) -> None:
    unsampled = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
    app = instrument(build_app(), constitutional_hash_mode="observe")
    async with client_for(app) as client:
        await client.get("/ok", headers={**unsampled, "Constitutional-Hash": HASH})
        await client.get("/ok", headers=unsampled)

    assert server_spans(captured) == []
    assert header_check_counts(captured) == {"compliant": 1, "violation": 1}


class RecordingAlertSink:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def send(self, event: dict[str, object]) -> None:
        self.events.append(event)


async def test_passed_header_checks_count_in_the_alerts_compliance_rate() -> None:
    alerts = RecordingAlertSink()
    # Alert under 50 % once 3 checks are in: three passes then three violations stay at 50 %,
    # whereas the violations alone would be 0 %.
    policy = agent_trace.AlertPolicy(compliance_threshold=0.5, min_checks=3).bind(alerts, HASH)
    with capture_spans(
        "agent-service", constitution_hash=HASH, sample_rate=0.0, alert_policy=policy
    ):
        app = instrument(build_app(), constitutional_hash_mode="observe")
        async with client_for(app) as client:
            for _ in range(3):
                await client.get("/ok", headers={"Constitutional-Hash": HASH})
            for _ in range(3):
                await client.get("/ok")

    assert not policy.alerting
    rate_alerts = [e for e in alerts.events if "Compliance rate" in str(e["message"])]
    assert rate_alerts == []


async def test_enforce_answers_a_missing_hash_with_428_and_records_the_violation(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app(), constitutional_hash_mode="enforce")
    async with client_for(app) as client:
        response = await client.get("/ok")

    assert response.status_code == 428
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "constitutional_hash_missing"
    assert body["expected_form"].startswith("Constitutional-Hash: <16 lowercase hex digits>")
    assert "received" not in body

    [check] = violation_checks(captured)
    server = captured.one("GET /ok")
    assert check.parent is not None and server.context is not None
    assert check.parent.span_id == server.context.span_id
    assert check.attributes is not None
    assert check.attributes["agent_trace.compliance.violation.type"] == (
        "constitutional_hash_missing"
    )
    assert check.attributes["agent_trace.compliance.enforcement"] == "block"
    # A refusal is the service doing its job, not a failure of the request.
    assert server.status.status_code is StatusCode.UNSET
    assert check.status.status_code is StatusCode.UNSET


async def test_enforce_answers_a_different_hash_with_409_echoing_at_most_64_characters(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app(), constitutional_hash_mode="enforce")
    sent = "f" * 16 + "0123456789" * 10
    async with client_for(app) as client:
        response = await client.get("/ok", headers={"Constitutional-Hash": sent})

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "constitutional_hash_mismatch"
    assert body["received"] == sent[:64]
    assert body["received_length"] == len(sent)
    assert "Constitutional-Hash" in body["expected_form"]
    [check] = violation_checks(captured)
    assert check.attributes is not None
    assert check.attributes["agent_trace.compliance.severity"] == "high"


async def test_enforce_handles_a_one_megabyte_hash_header(captured: CapturedSpans) -> None:
    app = instrument(build_app(), constitutional_hash_mode="enforce")
    sent = "7" * (1024 * 1024)
    async with client_for(app) as client:
        response = await client.get("/ok", headers={"Constitutional-Hash": sent})

    assert response.status_code == 409
    assert len(response.content) < 1024
    assert response.json()["received"] == "7" * 64
    assert response.json()["received_length"] == len(sent)
    [check] = violation_checks(captured)
    assert all(len(str(v)) < 200 for v in (check.attributes or {}).values())


async def test_enforce_handles_binary_garbage_in_the_hash_header(captured: CapturedSpans) -> None:
    app = instrument(build_app(), constitutional_hash_mode="enforce")
    garbage = bytes(range(0x80, 0x100)) + b"\x01\x7f<script>"
    async with client_for(app) as client:
        response = await client.get("/ok", headers=[(b"Constitutional-Hash", garbage)])

    assert response.status_code == 409
    received = response.json()["received"]
    assert len(received) == 64
    assert set(received) == {"\ufffd"}
    assert len(violation_checks(captured)) == 1


async def test_enforce_refuses_the_hash_sent_on_two_header_lines(captured: CapturedSpans) -> None:
    app = instrument(build_app(), constitutional_hash_mode="enforce")
    headers = [("Constitutional-Hash", HASH), ("Constitutional-Hash", HASH)]
    async with client_for(app) as client:
        response = await client.get("/ok", headers=headers)

    assert response.status_code == 409
    assert response.json()["received_count"] == 2


async def test_observe_lets_the_request_through_and_records_the_violation(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app(), constitutional_hash_mode="observe")
    async with client_for(app) as client:
        missing = await client.get("/ok")
        different = await client.get("/ok", headers={"Constitutional-Hash": "0" * 16})
        right = await client.get("/ok", headers={"Constitutional-Hash": HASH})

    assert [r.status_code for r in (missing, different, right)] == [200, 200, 200]
    checks = violation_checks(captured)
    kinds = sorted((c.attributes or {})["agent_trace.compliance.violation.type"] for c in checks)
    assert kinds == ["constitutional_hash_mismatch", "constitutional_hash_missing"]
    assert {(c.attributes or {})["agent_trace.compliance.enforcement"] for c in checks} == {
        "observe"
    }


async def test_mode_off_records_nothing_about_the_header(captured: CapturedSpans) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        await client.get("/ok", headers={"Constitutional-Hash": "0" * 16})

    [span] = captured.spans
    assert "agent_trace.constitution.header" not in (span.attributes or {})


async def test_an_explicit_hash_wins_over_the_configured_one(captured: CapturedSpans) -> None:
    app = instrument(
        build_app(), constitutional_hash_mode="enforce", constitutional_hash="00112233AABBCCDD"
    )
    async with client_for(app) as client:
        configured = await client.get("/ok", headers={"Constitutional-Hash": HASH})
        explicit = await client.get("/ok", headers={"Constitutional-Hash": "00112233aabbccdd"})

    assert (configured.status_code, explicit.status_code) == (409, 200)


# -- health --------------------------------------------------------------------------------------


async def test_health_answers_service_hash_and_sinks_untraced_and_unchecked(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app(), constitutional_hash_mode="enforce")
    async with client_for(app) as client:
        response = await client.get("/health")
        head = await client.head("/health")
        post = await client.post("/health")

    assert response.status_code == 200
    assert head.status_code == 200
    assert post.status_code == 405
    body = response.json()
    assert body["service"] == "agent-service"
    assert body["constitutional_hash"] == HASH
    assert body["constitutional_hash_mode"] == "enforce"
    assert body["sinks"] == agent_trace.sink_status()
    assert body["status"] == "ok"
    assert captured.spans == []


async def test_health_path_is_configurable_and_can_be_switched_off(
    captured: CapturedSpans,
) -> None:
    moved = instrument(build_app(), health_path="/_agent/health")
    none = instrument(build_app(), health_path=None)
    async with client_for(moved) as client:
        assert (await client.get("/_agent/health")).status_code == 200
        assert (await client.get("/health")).status_code == 404
    async with client_for(none) as client:
        assert (await client.get("/health")).status_code == 404


# -- incoming trace headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("malformed", [("traceparent", "00-not-a-trace-01")]),
        ("oversized", [("traceparent", VALID_TRACEPARENT + "-" + "a" * 4096)]),
        ("uppercase", [("traceparent", VALID_TRACEPARENT.upper())]),
        ("all-zero", [("traceparent", f"00-{'0' * 32}-{PARENT_ID}-01")]),
        ("two lines", [("traceparent", VALID_TRACEPARENT), ("traceparent", VALID_TRACEPARENT)]),
        (
            "malformed with sentry-trace",
            [("traceparent", "garbage"), ("sentry-trace", f"{TRACE_ID}-{PARENT_ID}-1")],
        ),
    ],
)
async def test_bad_incoming_trace_headers_start_a_fresh_trace(
    captured: CapturedSpans, name: str, headers: list[tuple[str, str]]
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        response = await client.get("/ok", headers=headers)

    assert response.status_code == 200, name
    [span] = captured.spans
    assert span.parent is None, name
    assert hex_trace(span) != TRACE_ID, name


async def test_a_valid_traceparent_makes_the_server_span_its_child(
    captured: CapturedSpans,
) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        await client.get("/ok", headers={"traceparent": VALID_TRACEPARENT})

    [span] = captured.spans
    assert hex_trace(span) == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID


async def test_incoming_baggage_never_becomes_span_attributes(captured: CapturedSpans) -> None:
    app = instrument(build_app())
    async with client_for(app) as client:
        await client.get(
            "/stream",
            headers={
                "traceparent": VALID_TRACEPARENT,
                "baggage": "user.email=alice%40example.com,tenant=acme,sentry-release=1.0",
            },
        )

    for span in captured.spans:
        text = json.dumps(dict(span.attributes or {}))
        assert "alice" not in text and "acme" not in text, span.name
        assert not [k for k in span.attributes or {} if k.startswith(("user.", "tenant"))]


# -- configuration -------------------------------------------------------------------------------


def test_an_unknown_mode_is_a_configuration_error(captured: CapturedSpans) -> None:
    with pytest.raises(agent_trace.ConfigurationError, match=r"'strict'.*off, observe, enforce"):
        instrument(build_app(), constitutional_hash_mode="strict")  # type: ignore[arg-type]


def test_an_excluded_url_that_is_no_regex_is_a_configuration_error(
    captured: CapturedSpans,
) -> None:
    with pytest.raises(agent_trace.ConfigurationError, match="excluded_urls='/a\\(b'"):
        instrument(build_app(), excluded_urls="/a(b")


def test_checking_the_hash_without_one_configured_is_a_configuration_error() -> None:
    from agent_trace.testing import capture_spans

    with (
        capture_spans("no-hash"),
        pytest.raises(agent_trace.ConfigurationError, match="CONSTITUTIONAL_HASH"),
    ):
        instrument(build_app(), constitutional_hash_mode="observe")


async def test_the_lifespan_end_flushes_queued_spans(
    captured: CapturedSpans, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_trace import _api

    flushed: list[float] = []
    monkeypatch.setattr(_api, "force_flush", lambda timeout_s=5.0: flushed.append(timeout_s))
    app = instrument(build_app())
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, str]] = []

    async def receive() -> dict[str, str]:
        return messages.pop(0)

    async def send(message: dict[str, str]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert len(flushed) == 1


def test_importing_without_the_extra_names_the_pip_command() -> None:
    # A fresh interpreter in which `fastapi` cannot be imported.
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "try:\n"
        "    import agent_trace.integrations.fastapi\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    assert "pip install 'agent-trace[fastapi]'" in out.stdout
    assert "fastapi" in out.stdout.split(":")[0]


# -- HTTP server metrics -------------------------------------------------------------------------


def served(captured: CapturedSpans, route: str) -> int:
    """How many requests to `route` the server duration histogram counted."""
    return sum(
        count
        for name, points in captured.metrics().items()
        if name.startswith("http.server") and name.endswith("duration")
        for attrs, count in points
        if attrs.get("http.target", attrs.get("http.route")) == route
    )


async def test_server_metrics_follow_the_configuration_in_force() -> None:
    # Instrumented before any configuration, then measured under two in turn.
    app = instrument(build_app())
    with capture_spans("first") as first:
        async with client_for(app) as client:
            await client.get("/ok")
            await client.get("/ok")
        assert served(first, "/ok") == 2

    with capture_spans("second") as second:
        async with client_for(app) as client:
            await client.get("/ok")
        assert served(second, "/ok") == 1
    assert served(first, "/ok") == 2

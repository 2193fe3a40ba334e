"""Hostile request headers against `agent_trace.integrations.fastapi.instrument`, in process.

Malformed, oversized, duplicated and binary trace headers must start a fresh trace (never half
reuse ids), baggage must never become a span attribute, refusals must echo at most 64
characters of what was sent, and nothing may crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from agent_trace.integrations.fastapi import instrument
from agent_trace.testing import CapturedSpans, capture_spans

HASH = "a1b2c3d4e5f60718"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
OTHER_TRACE = "1" * 32
OTHER_PARENT = "2" * 16
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"

Headers = list[tuple[bytes, bytes]]


def h(*pairs: tuple[str, str | bytes]) -> Headers:
    return [
        (name.encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
        for name, value in pairs
    ]


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans("agent-service", constitution_hash=HASH) as captured:
        yield captured


def build_app(mode: str = "enforce", excluded: list[str] | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/act")
    async def act() -> dict[str, str]:
        return {"done": "yes"}

    return instrument(app, constitutional_hash_mode=mode, excluded_urls=excluded or [])  # type: ignore[arg-type]


def call(app: FastAPI, headers: Headers, path: str = "/act") -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(send())


def server_span(spans: CapturedSpans) -> ReadableSpan:
    [span] = [s for s in spans.spans if s.kind == SpanKind.SERVER]
    return span


# -- traceparent / sentry-trace -------------------------------------------------------------------

FRESH_TRACE = {
    "duplicated traceparent": h(
        ("traceparent", VALID), ("traceparent", f"00-{OTHER_TRACE}-{OTHER_PARENT}-01")
    ),
    "same traceparent twice": h(("traceparent", VALID), ("traceparent", VALID)),
    "uppercase hex": h(("traceparent", VALID.upper())),
    "extra field": h(("traceparent", VALID + "-00")),
    "version ff": h(("traceparent", "ff" + VALID[2:])),
    "zero trace id": h(("traceparent", f"00-{'0' * 32}-{PARENT_ID}-01")),
    "zero span id": h(("traceparent", f"00-{TRACE_ID}-{'0' * 16}-01")),
    "one megabyte": h(("traceparent", "0" * 1_000_000)),
    "binary": h(("traceparent", bytes(range(256)))),
    "latin-1 digit": h(("traceparent", VALID[:-2].encode() + b"\xb2\xb3")),
    "nul inside": h(("traceparent", VALID[:10] + "\x00" + VALID[11:])),
    "invalid traceparent beside a valid sentry-trace": h(
        ("traceparent", "garbage"), ("sentry-trace", f"{TRACE_ID}-{PARENT_ID}-1")
    ),
    "duplicated sentry-trace": h(
        ("sentry-trace", f"{TRACE_ID}-{PARENT_ID}-1"),
        ("sentry-trace", f"{OTHER_TRACE}-{OTHER_PARENT}-1"),
    ),
    "sentry-trace with junk": h(("sentry-trace", f"{TRACE_ID}-{PARENT_ID}-1-extra")),
    "sentry-trace one megabyte": h(("sentry-trace", "a" * 1_000_000)),
}


@pytest.mark.parametrize("headers", FRESH_TRACE.values(), ids=list(FRESH_TRACE))
def test_untrustworthy_trace_headers_start_a_fresh_trace(
    spans: CapturedSpans, headers: Headers
) -> None:
    response = call(build_app(), [*headers, *h(("constitutional-hash", HASH))])
    assert response.status_code == 200
    span = server_span(spans)
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" not in (TRACE_ID, OTHER_TRACE)
    assert span.context.span_id not in (int(PARENT_ID, 16), int(OTHER_PARENT, 16))


CONTINUED_TRACE = {
    "valid traceparent": h(("traceparent", VALID)),
    "valid sentry-trace alone": h(("sentry-trace", f"{TRACE_ID}-{PARENT_ID}-1")),
    "tracestate one megabyte": h(("traceparent", VALID), ("tracestate", "a=" + "b" * 1_000_000)),
    "tracestate garbage": h(("traceparent", VALID), ("tracestate", b"\x00\x01,,=,==\xff")),
    "tracestate repeated": h(("traceparent", VALID), ("tracestate", "a=1"), ("tracestate", "b=2")),
    "baggage one megabyte": h(("traceparent", VALID), ("baggage", "k=" + "v" * 1_000_000)),
    "baggage binary": h(("traceparent", VALID), ("baggage", bytes(range(256)))),
}


@pytest.mark.parametrize("headers", CONTINUED_TRACE.values(), ids=list(CONTINUED_TRACE))
def test_valid_parent_is_kept_whatever_rides_along(spans: CapturedSpans, headers: Headers) -> None:
    response = call(build_app(), [*headers, *h(("constitutional-hash", HASH))])
    assert response.status_code == 200
    span = server_span(spans)
    assert span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID


def test_baggage_never_becomes_a_span_attribute(spans: CapturedSpans) -> None:
    baggage = "user.password=hunter2secret,session.id=s-evil,agent_trace.session.outcome=approved"
    response = call(
        build_app(),
        h(("traceparent", VALID), ("baggage", baggage), ("constitutional-hash", HASH)),
    )
    assert response.status_code == 200
    for span in spans.spans:
        attributes = dict(span.attributes or {})
        assert "user.password" not in attributes
        assert "session.id" not in attributes
        assert "hunter2secret" not in repr(attributes)
        assert attributes.get("agent_trace.session.outcome") != "approved"


# -- Constitutional-Hash --------------------------------------------------------------------------

REFUSED = {
    "one megabyte": (h(("constitutional-hash", "<script>" * 131_072)), 409),
    "binary": (h(("constitutional-hash", bytes(range(128, 256)) * 40)), 409),
    "utf-8 text": (h(("constitutional-hash", "ḧäšḧ".encode() * 100)), 409),
    "repeated": (h(("constitutional-hash", HASH), ("constitutional-hash", HASH)), 409),
    "prefix of the hash": (h(("constitutional-hash", HASH[:8])), 409),
    "hash with injection": (
        h(("constitutional-hash", HASH + "\r\nSet-Cookie: session=evil")),
        409,
    ),
    "missing": (h(("x-other", "1")), 428),
    "empty": (h(("constitutional-hash", "")), 409),
}


@pytest.mark.parametrize(("headers", "status"), REFUSED.values(), ids=list(REFUSED))
def test_refusals_echo_at_most_64_characters(
    spans: CapturedSpans, headers: Headers, status: int
) -> None:
    response = call(build_app(), headers)
    assert response.status_code == status
    body = response.json()
    assert len(response.content) < 2048
    received = body.get("received")
    if status == 428:
        assert received is None
    else:
        assert isinstance(received, str)
        assert len(received) <= 64
        assert all(c == "\ufffd" or " " <= c <= "~" for c in received)
    assert "set-cookie" not in {k.lower() for k in response.headers}
    for span in spans.spans:
        assert "<script>" not in repr(dict(span.attributes or {}))


def test_observe_mode_lets_hostile_hashes_through_and_records_them(spans: CapturedSpans) -> None:
    response = call(build_app("observe"), h(("constitutional-hash", bytes(range(256)) * 1000)))
    assert response.status_code == 200
    assert server_span(spans).attributes["agent_trace.constitution.header"] == "mismatch"
    assert spans.find(prefix="policy_check ")


@pytest.mark.parametrize("host", ["metrics", "metrics.agent.example", "agent/metrics"])
def test_host_header_cannot_switch_off_enforcement(spans: CapturedSpans, host: str) -> None:
    app = build_app("enforce", excluded=["metrics"])
    response = call(app, h(("host", host)), path="/act")
    assert response.status_code == 428


def build_proposals_app(excluded: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/metrics")
    async def metrics() -> dict[str, str]:
        return {"requests": "1"}

    @app.get("/proposals/{pid}")
    async def proposal(pid: str) -> dict[str, str]:
        return {"pid": pid}

    return instrument(app, constitutional_hash_mode="enforce", excluded_urls=excluded)


ENFORCED_PATHS = {
    "path parameter": "/proposals/metrics",
    "encoded path parameter": "/proposals/%2Fmetrics",
    "path segment after": "/metrics/../proposals/p-1",
    "double slash": "//metrics",
    "trailing slash": "/metrics/",
    "query": "/proposals/p-1?x=/metrics",
    "fragment-like parameter": "/proposals/p-1%23/metrics",
}


@pytest.mark.parametrize("path", ENFORCED_PATHS.values(), ids=list(ENFORCED_PATHS))
def test_a_client_cannot_spell_an_excluded_path_to_switch_off_enforcement(
    spans: CapturedSpans, path: str
) -> None:
    assert call(build_proposals_app(["/metrics"]), [], path=path).status_code == 428


EXEMPTING_NOTHING_HERE = {
    "the index page": ["/"],
    "a wildcard ending elsewhere": [".*metrics"],
    "an empty item": ["/metrics", ""],
    "a prefix": ["/pro"],
}


@pytest.mark.parametrize(
    "excluded", EXEMPTING_NOTHING_HERE.values(), ids=list(EXEMPTING_NOTHING_HERE)
)
def test_an_excluded_pattern_switches_off_no_more_than_the_paths_it_spells_out(
    spans: CapturedSpans, excluded: list[str]
) -> None:
    app = build_proposals_app(excluded)
    assert call(app, [], path="/proposals/p-1").status_code == 428


def test_excluded_path_itself_is_still_excluded(spans: CapturedSpans) -> None:
    app = build_app("enforce", excluded=["/act$"])
    assert call(app, []).status_code == 200
    assert spans.spans == []


def test_health_route_answers_without_echoing_headers(spans: CapturedSpans) -> None:
    response = call(
        build_app(),
        h(("constitutional-hash", "<script>x</script>"), ("traceparent", "0" * 100_000)),
        path="/health",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["constitutional_hash"] == HASH
    assert "<script>" not in response.text
    assert spans.spans == []

"""`agent_trace.integrations.httpx`: outgoing requests carry exactly one value of each header."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx

import agent_trace
from agent_trace.integrations.httpx import instrument_client, propagation_headers
from agent_trace.testing import CapturedSpans
from tests.integrations.conftest import HASH

ROOT = Path(__file__).resolve().parents[2]
STALE_TRACEPARENT = "00-11111111111111111111111111111111-2222222222222222-01"


class Recorder:
    """A mock transport that keeps the headers of every request, duplicates included."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={})

    def values(self, index: int, name: str) -> list[str]:
        return self.requests[index].headers.get_list(name)


def async_client(recorder: Recorder) -> httpx.AsyncClient:
    return instrument_client(httpx.AsyncClient(transport=httpx.MockTransport(recorder)))


async def test_a_request_in_a_turn_carries_one_value_of_each_header(
    captured: CapturedSpans,
) -> None:
    recorder = Recorder()
    async with (
        async_client(recorder) as client,
        agent_trace.session("review") as s,
        s.turn("legal", remote=True) as turn,
    ):
        await client.get(
            "http://legal.test/turn",
            headers=[
                ("traceparent", STALE_TRACEPARENT),
                ("traceparent", "junk"),
                ("sentry-trace", "junk"),
                ("Constitutional-Hash", "0" * 16),
            ],
        )

    assert recorder.values(0, "traceparent") == [f"00-{turn.trace_id}-{turn.span_id}-01"]
    assert recorder.values(0, "sentry-trace") == [f"{turn.trace_id}-{turn.span_id}-1"]
    [baggage] = recorder.values(0, "baggage")
    assert f"sentry-trace_id={turn.trace_id}" in baggage
    assert recorder.values(0, "constitutional-hash") == [HASH]


async def test_the_turn_is_the_client_span_and_no_http_span_is_added(
    captured: CapturedSpans,
) -> None:
    recorder = Recorder()
    async with (
        async_client(recorder) as client,
        agent_trace.session("review") as s,
        s.turn("legal", remote=True),
    ):
        await client.get("http://legal.test/turn")

    assert sorted(span.name for span in captured.spans) == [
        "invoke_agent legal",
        "invoke_workflow review",
    ]
    assert captured.one("invoke_agent legal").kind.name == "CLIENT"


async def test_outside_any_span_only_the_constitutional_hash_is_sent(
    captured: CapturedSpans,
) -> None:
    recorder = Recorder()
    async with async_client(recorder) as client:
        await client.get("http://legal.test/turn")

    headers = recorder.requests[0].headers
    assert "traceparent" not in headers and "sentry-trace" not in headers
    assert headers["constitutional-hash"] == HASH


async def test_the_callers_baggage_entries_are_kept_in_the_one_baggage_header(
    captured: CapturedSpans,
) -> None:
    recorder = Recorder()
    async with async_client(recorder) as client, agent_trace.session("review"):
        await client.get("http://legal.test/turn", headers={"baggage": "tenant=acme"})

    [baggage] = recorder.values(0, "baggage")
    entries = baggage.split(",")
    assert "tenant=acme" in entries
    assert len([e for e in entries if e.startswith("sentry-trace_id=")]) == 1


async def test_instrumenting_a_client_twice_adds_one_hook(captured: CapturedSpans) -> None:
    recorder = Recorder()
    client = async_client(recorder)
    assert instrument_client(client) is client
    assert len(client.event_hooks["request"]) == 1
    await client.aclose()


def test_a_sync_client_carries_the_trace_too(captured: CapturedSpans) -> None:
    recorder = Recorder()
    client = instrument_client(httpx.Client(transport=httpx.MockTransport(recorder)))
    with client, agent_trace.session("review") as s, s.turn("ethics", remote=True) as turn:
        client.post("http://ethics.test/turn", json={})

    assert recorder.values(0, "traceparent") == [f"00-{turn.trace_id}-{turn.span_id}-01"]


async def test_concurrent_sessions_through_one_client_keep_their_own_traces(
    captured: CapturedSpans,
) -> None:
    recorder = Recorder()
    turns: dict[str, tuple[str, str]] = {}

    async def review(name: str) -> None:
        async with (
            agent_trace.session("review", session_id=name) as s,
            s.turn("legal", remote=True) as turn,
        ):
            turns[name] = (turn.trace_id, turn.span_id)
            await asyncio.sleep(0.01)
            await client.get(f"http://legal.test/turn?session={name}")

    async with async_client(recorder) as client:
        await asyncio.gather(review("first"), review("second"))

    sent = {
        request.url.params["session"]: request.headers["traceparent"]
        for request in recorder.requests
    }
    for name, (trace_id, span_id) in turns.items():
        assert sent[name] == f"00-{trace_id}-{span_id}-01"
    assert turns["first"][0] != turns["second"][0]


def test_propagation_headers_can_leave_the_hash_out(captured: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        headers = propagation_headers(constitutional_hash=False)
        with_hash = propagation_headers()

    assert headers["traceparent"] == f"00-{s.trace_id}-{s.span_id}-01"
    assert "Constitutional-Hash" not in headers
    assert with_hash["Constitutional-Hash"] == HASH


def test_importing_without_httpx_names_the_pip_command() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "try:\n"
        "    import agent_trace.integrations.httpx\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "as httpx is not installed: pip install 'agent-trace[fastapi]'" in out.stdout

"""Outages and shutdown: a dead or silent OTLP endpoint, crashed agents, very long sessions.

The host program must keep its pace while a sink is down, `shutdown()` must keep its deadline
and account for every span it could not deliver, spans that are never ended must cost nothing,
and a session longer than ten minutes must arrive whole.
"""

# ruff: noqa: SIM117

from __future__ import annotations

import contextvars
import gc
import logging
import statistics
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sentry_sdk.envelope import Envelope

import agent_trace
from agent_trace import _log
from agent_trace._config import SentryDsn
from agent_trace.pipeline.drops import DropCounter
from agent_trace.pipeline.sinks._http import HttpAnswer, HttpError
from agent_trace.pipeline.sinks.sentry_envelope import SentryEnvelopeSink
from agent_trace.testing import capture_spans
from tests.backends.otlp_recorder import OtlpGrpcRecorder, OtlpHttpRecorder, closed_port
from tests.reliability._support import file_spans

SESSIONS = 200
SPANS_PER_SESSION = 5  # session, turn, round, two votes


def one_session(index: int) -> None:
    with agent_trace.session("review", session_id=f"s{index}", agents=["a", "b"]) as s:
        with s.turn("a"):
            pass
        with s.consensus_round("majority", participants=["a", "b"]) as rnd:
            rnd.vote("a", "approve")
            rnd.vote("b", "approve")


def timed_sessions(count: int) -> list[float]:
    durations = []
    for index in range(count):
        started = time.perf_counter()
        one_session(index)
        durations.append(time.perf_counter() - started)
    return durations


def drops_since(before: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    after = agent_trace.dropped_spans()
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


# -- 5. outages ------------------------------------------------------------------------------


@pytest.fixture(params=["http-closed", "grpc-closed", "http-silent", "grpc-silent"])
def dead_endpoint(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(endpoint, protocol) of an OTLP receiver that refuses connections or never answers."""
    protocol, how = request.param.split("-")
    if how == "closed":
        path = "/v1/traces" if protocol == "http" else ""
        yield f"http://127.0.0.1:{closed_port()}{path}", protocol
    elif protocol == "http":
        with OtlpHttpRecorder() as http:
            http.hang()
            yield http.traces_url, protocol
    else:
        with OtlpGrpcRecorder() as grpc:
            grpc.hang()
            yield grpc.endpoint, protocol


@pytest.mark.integration
def test_a_dead_otlp_endpoint_costs_no_time_and_shutdown_says_what_was_lost(
    dead_endpoint: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    endpoint, protocol = dead_endpoint
    _log._reset_for_tests()
    caplog.set_level(logging.WARNING)

    # The same calls untraced (agent-trace imported, not configured) and traced, in one test.
    assert agent_trace.settings() is None
    timed_sessions(20)  # warm-up
    untraced = timed_sessions(SESSIONS)

    before = agent_trace.dropped_spans()
    with capture_spans("outage", otlp_endpoint=endpoint, otlp_protocol=protocol) as captured:
        timed_sessions(20)
        captured.clear()
        traced = timed_sessions(SESSIONS)
        assert len(captured.spans) == SESSIONS * SPANS_PER_SESSION

        started = time.monotonic()
        delivered = agent_trace.shutdown(timeout_s=3)
        took_s = time.monotonic() - started

    assert delivered is False
    assert took_s < 3.5
    # Tracing adds per-span bookkeeping, never a network wait (the exporter's retries take
    # seconds). Generous bounds for a shared two-core machine: a session that waited once on
    # the exporter would take its 10 s timeout; a busy machine stalls one for a few 100 ms.
    assert statistics.median(traced) - statistics.median(untraced) < 0.005
    assert max(traced) < 1.0, sorted(traced)[-5:]

    lost = drops_since(before)
    assert lost == {("otlp", "shutdown_timeout"): (SESSIONS + 20) * SPANS_PER_SESSION}, lost
    ours = [r for r in caplog.records if r.name.startswith("agent_trace")]
    [warning] = ours
    message = warning.getMessage()
    assert f"{(SESSIONS + 20) * SPANS_PER_SESSION} spans" in message
    assert endpoint in message
    assert "dropped_spans" in message


@pytest.mark.integration
def test_spans_ending_after_shutdown_are_counted_not_raised() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    before = agent_trace.dropped_spans()
    with capture_spans("after", otlp_endpoint=endpoint, otlp_protocol="grpc") as captured:
        with agent_trace.session("review") as s:
            turn = s.turn("late")
            turn.__enter__()
            agent_trace.shutdown(timeout_s=0.5)
            # The host keeps going after shutdown: the open turn and session end later, and a
            # new turn starts with tracing off. Nothing raises.
            turn.__exit__(None, None, None)
            with s.turn("later") as later:
                assert not later.recording

    lost = drops_since(before)
    assert lost == {("otlp", "after_shutdown"): 2}, lost
    # The test kit's memory sink is fed inline, before the closed queues: it saw both.
    assert sorted(x.name for x in captured.spans) == ["invoke_agent late", "invoke_workflow review"]


# -- 8. crashed agents and very long sessions ------------------------------------------------


def crash_turn(session: agent_trace.Session, agent: str, finished_children: int = 0) -> None:
    """An agent that starts its turn and dies: the turn is never ended, nothing refers to it."""

    def run() -> None:
        turn = session.turn(agent)
        turn.__enter__()
        for _ in range(finished_children):
            with agent_trace.policy_check("privacy"):
                pass

    contextvars.copy_context().run(run)


def test_ten_thousand_turns_never_ended_cost_no_memory(tmp_path: Path) -> None:
    with capture_spans(local_file=True, local_path=tmp_path / "t.jsonl"):
        with agent_trace.session("review") as s:
            for index in range(200):
                crash_turn(s, f"warm-{index}")
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                for index in range(10_000):
                    crash_turn(s, f"agent-{index}")
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # Kept alive, 10,000 open turns would hold about 40 MB here.
    assert grown < 1_000_000, grown


class RecordingPoster:
    """Stands in for the Sentry sink's connection: keeps every envelope posted, answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def post_many(self, bodies: list[bytes]) -> list[HttpAnswer | HttpError]:
        self.bodies.extend(bodies)
        return [HttpAnswer(200, {}) for _ in bodies]

    def close(self) -> None:
        return None

    def transactions(self) -> list[dict[str, Any]]:
        return [Envelope.deserialize(body).get_transaction_event() for body in self.bodies]


class FakeClock:
    """Stands in for the SDK's clock: every reading advances it by `step_ns`."""

    def __init__(self, start_ns: int, step_ns: int = 1_000) -> None:
        self.now_ns = start_ns
        self.step_ns = step_ns

    def __call__(self) -> int:
        self.now_ns += self.step_ns
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)


def test_a_session_longer_than_ten_minutes_arrives_whole_despite_crashed_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simulated session starts 11 minutes ago and ends now, a minute per turn.
    clock = FakeClock(time.time_ns() - 11 * 60 * 10**9)
    monkeypatch.setattr("opentelemetry.sdk.trace.time_ns", clock)
    sentry = RecordingPoster()
    # A parking area small enough for the crashed agents' leftovers to overflow it.
    envelope_sink = SentryEnvelopeSink(
        SentryDsn.parse("http://public@127.0.0.1:9/0"),
        DropCounter(),
        environment=None,
        release=None,
        timeout_s=1.0,
        max_parked_spans=500,
        poster=sentry,
    )
    path = tmp_path / "traces.jsonl"

    with capture_spans(
        local_file=True,
        local_path=path,
        _extra_sinks=[envelope_sink],
        max_queue_size=50_000,
        max_export_batch_size=512,
    ) as captured:
        with agent_trace.session("long_review", session_id="long") as s:
            for minute in range(11):
                with s.turn(f"agent-{minute}"):
                    clock.advance(60)
                # Meanwhile crashed agents leave finished checks under turns that never end.
                for index in range(100):
                    crash_turn(s, f"crashed-{minute}-{index}", finished_children=1)
            long_trace_id = s.trace_id
        assert agent_trace.force_flush(timeout_s=10)

        def long_session_spans(spans: Sequence[Any]) -> list[Any]:
            return [x for x in spans if x.attributes.get("gen_ai.conversation.id") == "long"]

        memory = [x for x in long_session_spans(captured.spans) if x.name != "policy_check privacy"]

    assert len(memory) == 12
    root = captured.one("invoke_workflow long_review")
    assert root.end_time - root.start_time >= 11 * 60 * 10**9
    assert len(captured.turns(root)) == 11

    in_file = [x for x in file_spans(path) if x.trace_id == long_trace_id]
    [file_root] = [x for x in in_file if x.name == "invoke_workflow long_review"]
    duration_ns = int(file_root.raw["endTimeUnixNano"]) - int(file_root.raw["startTimeUnixNano"])
    assert duration_ns >= 11 * 60 * 10**9
    file_turns = [x for x in in_file if x.parent_id == file_root.span_id]
    assert sorted(t.name for t in file_turns if not t.name.startswith("invoke_agent crashed")) == (
        sorted(f"invoke_agent agent-{m}" for m in range(11))
    )

    # Sentry: the session is one transaction holding all eleven turns, even though the
    # crashed agents' leftovers overflowed the parking area many times meanwhile.
    [transaction] = [
        t for t in sentry.transactions() if t["transaction"] == "invoke_workflow long_review"
    ]
    turns = sorted(x["description"] for x in transaction["spans"])
    assert turns == sorted(f"invoke_agent agent-{m}" for m in range(11))
    assert transaction["timestamp"] - transaction["start_timestamp"] >= 11 * 60

"""A new user's and an adversary's attacks on the finished library, each fault pinned by a test.

Each fault these attacks found was first pinned here as a strict xfail and is fixed now; the
tests keep guarding against it, beside attacks the library withstood that nothing else guarded.
A new fault goes in as `xfail(strict=True)` with a reason naming the file, the function and the
mechanism. Servers are started here, on 127.0.0.1, and stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

import agent_trace
from agent_trace.agent_monitor import AgentMonitor
from agent_trace.integrations.fastapi import instrument
from tests.adversarial._support import REPO, SECRET, captured, isolated, local_pipeline
from tests.backends._support import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    scrubbed_env,
    start_uvicorn,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"
HASH = "a1b2c3d4e5f60718"


# -- handles used after their block ended ---------------------------------------------------------


def _drops() -> int:
    """Spans dropped so far, every sink and reason (the counts add up across pipelines)."""
    return sum(agent_trace.dropped_spans().values())


def test_a_turn_opened_on_an_ended_session_is_exported_or_counted() -> None:
    def attack() -> tuple[int, int]:
        with captured() as spans:
            session = agent_trace.session("review", session_id="s-ended")
            with session:
                pass
            before = _drops()
            with session.turn("late"):
                pass
            return len(spans.find("invoke_agent late")), _drops() - before

    exported, dropped = isolated(attack)
    assert exported == 1 or dropped >= 1


def test_a_wrapped_tool_that_outlives_its_turn_is_exported_or_counted() -> None:
    def tool() -> None:
        with agent_trace.policy_check("late_tool"):
            pass

    def attack() -> tuple[int, int]:
        with captured() as spans:
            with agent_trace.session("review") as session:
                with session.turn("ethics"):
                    wrapped = agent_trace.with_current_context(tool)
                before = _drops()
                worker = threading.Thread(target=wrapped)
                worker.start()
                worker.join()
            return len(spans.find("policy_check late_tool")), _drops() - before

    exported, dropped = isolated(attack)
    assert exported == 1 or dropped >= 1


def test_reconfiguring_while_a_session_is_open_counts_what_it_loses(tmp_path: Path) -> None:
    key = ("local_file", "after_shutdown")

    def attack() -> int:
        local_pipeline(tmp_path / "first.jsonl")
        session = agent_trace.session("review")
        session.__enter__()
        local_pipeline(tmp_path / "second.jsonl")
        before = agent_trace.dropped_spans().get(key, 0)
        session.__exit__(None, None, None)
        dropped = agent_trace.dropped_spans().get(key, 0) - before
        agent_trace.shutdown(timeout_s=5)
        return dropped

    assert isolated(attack) == 1


# -- consensus arithmetic -------------------------------------------------------------------------


def test_a_quorum_given_as_text_does_not_raise_from_conclude() -> None:
    def attack() -> agent_trace.RoundResult:
        with captured(), agent_trace.session("review") as session:
            rnd = session.consensus_round("weighted_vote", participants=["a"], quorum="1")  # type: ignore[arg-type]
            rnd.vote("a", "approve")
            return rnd.conclude()

    result = isolated(attack)
    assert result.votes_for == 1


def test_a_negative_vote_weight_cannot_push_agreement_above_one() -> None:
    def attack() -> agent_trace.RoundResult:
        with captured(), agent_trace.session("review") as session:
            rnd = session.consensus_round("weighted_vote", participants=["a", "b"])
            rnd.vote("a", "approve", weight=2.0)
            rnd.vote("b", "reject", weight=-1.0)
            return rnd.conclude()

    result = isolated(attack)
    assert 0.0 <= result.agreement <= 1.0


# -- wrong types at the public face ---------------------------------------------------------------


def _session_agents() -> Any:
    return agent_trace.session("review", agents=5)  # type: ignore[arg-type]


def _round_participants() -> Any:
    with agent_trace.session("review") as session:
        return session.consensus_round("weighted_vote", participants=5)  # type: ignore[arg-type]


def _module_round_participants() -> Any:
    return agent_trace.consensus_round("weighted_vote", participants=5)  # type: ignore[arg-type]


def _conflict_parties() -> Any:
    return agent_trace.resolve_conflict(5, "mediation")  # type: ignore[arg-type]


def _monitor_agents() -> Any:
    return AgentMonitor().start_coordination_session("s-1", "review", agents=5)  # type: ignore[arg-type]


NOT_ITERABLE: dict[str, Callable[[], Any]] = {
    "session agents": _session_agents,
    "round participants": _round_participants,
    "module round participants": _module_round_participants,
    "conflict parties": _conflict_parties,
    "agent_monitor agents": _monitor_agents,
}


@pytest.mark.parametrize("open_scope", NOT_ITERABLE.values(), ids=list(NOT_ITERABLE))
def test_a_non_iterable_agent_list_does_not_raise(open_scope: Callable[[], Any]) -> None:
    def attack() -> None:
        with captured():
            open_scope()

    isolated(attack)


def test_an_unhashable_coordination_session_id_does_not_raise() -> None:
    def attack() -> None:
        with captured():
            monitor = AgentMonitor()
            monitor.start_coordination_session(["s-1"], "review")  # type: ignore[arg-type]
            monitor.complete_coordination_session(["s-1"], True)  # type: ignore[arg-type]

    isolated(attack)


# -- propagation API ------------------------------------------------------------------------------

NON_TEXT_BAGGAGE: dict[str, Any] = {
    "bytes, as Kafka headers are": b"k=v",
    "an int": 5,
    "a list holding None": ["k=v", None],
    "a list of bytes": [b"k=v"],
}


@pytest.mark.parametrize("value", NON_TEXT_BAGGAGE.values(), ids=list(NON_TEXT_BAGGAGE))
def test_non_text_baggage_neither_raises_nor_loses_the_parent(value: Any) -> None:
    def attack() -> str:
        with captured():
            ctx = propagate.extract({"traceparent": VALID, "baggage": value})
            return f"{trace.get_current_span(ctx).get_span_context().trace_id:032x}"

    assert isolated(attack) == TRACE_ID


NON_TEXT_TRACE_HEADERS: dict[str, dict[str, Any]] = {
    "bytes traceparent": {"traceparent": VALID.encode()},
    "traceparent beside None": {"traceparent": [VALID, None]},
    "int sentry-trace": {"sentry-trace": 7},
    "int tracestate": {"tracestate": 5},
}


@pytest.mark.parametrize(
    "carrier", NON_TEXT_TRACE_HEADERS.values(), ids=list(NON_TEXT_TRACE_HEADERS)
)
def test_non_text_trace_headers_are_ignored_without_raising(carrier: dict[str, Any]) -> None:
    def attack() -> int:
        with captured():
            ctx = propagate.extract(carrier)
            return trace.get_current_span(ctx).get_span_context().trace_id

    trace_id = isolated(attack)
    assert trace_id in (0, int(TRACE_ID, 16))


def test_incoming_sentry_baggage_cannot_override_the_dynamic_sampling_context() -> None:
    def attack() -> str:
        with captured():
            ctx = propagate.extract(
                {"traceparent": VALID, "baggage": "sentry-release=evil,sentry-sampled=false"}
            )
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=ctx)
            return carrier["baggage"]

    entries = isolated(attack).split(",")
    assert "sentry-release=evil" not in entries
    assert "sentry-sampled=true" in entries
    assert "sentry-sampled=false" not in entries


def test_outgoing_baggage_stays_within_the_limit_and_keeps_sentrys_entries() -> None:
    def attack() -> tuple[int, dict[str, object]]:
        with captured(), agent_trace.session("review"):
            token = otel_context.attach(otel_baggage.set_baggage("note", "v" * 10_000))
            try:
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
            finally:
                otel_context.detach(token)
            received = dict(otel_baggage.get_all(propagate.extract(carrier)))
            return len(carrier["baggage"].encode()), received

    size, received = isolated(attack)
    assert size <= 8192
    assert "sentry-trace_id" in received


# -- threads --------------------------------------------------------------------------------------


def _turns_exited_in_another_thread() -> list[str]:
    """Two turns, each entered here and exited by a worker thread; the names exported."""
    with captured() as spans, agent_trace.session("review") as session:
        for agent in ("ethics", "legal"):
            turn = session.turn(agent)
            turn.__enter__()
            worker = threading.Thread(target=turn.__exit__, args=(None, None, None))
            worker.start()
            worker.join()
        return sorted(s.name for s in spans.spans if s.name.startswith("invoke_agent"))


def test_a_turn_exited_in_another_thread_does_not_swallow_the_next_turn() -> None:
    assert isolated(_turns_exited_in_another_thread) == [
        "invoke_agent ethics",
        "invoke_agent legal",
    ]


def test_exiting_turns_in_another_thread_logs_at_most_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        isolated(_turns_exited_in_another_thread)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) <= 1


async def _turns_exited_by_another_task() -> list[str]:
    """Two turns, each exited by a task of its own (a cleanup callback), then a check."""
    with captured() as spans:
        async with agent_trace.session("review") as session:
            for agent in ("ethics", "legal"):
                turn = session.turn(agent)
                await turn.__aenter__()
                await asyncio.create_task(turn.__aexit__(None, None, None))
            with session.policy_check("privacy"):
                pass
        return sorted(s.name for s in spans.spans)


def test_a_turn_exited_by_another_task_does_not_swallow_what_follows() -> None:
    names = isolated(lambda: asyncio.run(_turns_exited_by_another_task()))
    assert names == [
        "invoke_agent ethics",
        "invoke_agent legal",
        "invoke_workflow review",
        "policy_check privacy",
    ]


# -- secrets in serialised text -------------------------------------------------------------------

SERIALISED = {
    "JSON text": '{"password": "%s"}',
    "a Python dict's repr": "{'api_key': '%s'}",
}


def _check_carrying(value: str) -> None:
    with agent_trace.policy_check("privacy", **{"agent_trace.tool.arguments": value}):
        pass


@pytest.mark.parametrize("template", SERIALISED.values(), ids=list(SERIALISED))
def test_secrets_in_serialised_mappings_are_scrubbed(template: str) -> None:
    value = template % SECRET

    def attack() -> list[str]:
        with captured(capture_content=True) as spans, agent_trace.session("review"):
            _check_carrying(value)
        return [repr(dict(span.attributes or {})) for span in spans.spans]

    exported = isolated(attack)
    assert exported
    assert not any(SECRET in text for text in exported)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups arrived in 3.11")
def test_exception_group_messages_never_leave_without_content_capture() -> None:
    def attack() -> list[str]:
        with captured() as spans:
            with contextlib.suppress(Exception), agent_trace.session("review"):
                group = ExceptionGroup  # noqa: F821 - a builtin from Python 3.11 (skipped before)
                raise group(f"group {SECRET}", [ValueError(f"member {SECRET}")])
            return [
                repr(dict(event.attributes or {})) for span in spans.spans for event in span.events
            ]

    exported = isolated(attack)
    assert any("ExceptionGroup" in text for text in exported)
    assert not any(SECRET in text for text in exported)


# -- configure() with values of the wrong type ----------------------------------------------------

WRONG_TYPES: dict[str, dict[str, Any]] = {
    "local_path as an int": {"local_path": 123, "local_file": True},
    "alert_policy as text": {"alert_policy": "yes"},
}


@pytest.mark.parametrize("settings", WRONG_TYPES.values(), ids=list(WRONG_TYPES))
def test_values_of_the_wrong_type_raise_configuration_error(settings: dict[str, Any]) -> None:
    def attack() -> None:
        try:
            with pytest.raises(agent_trace.ConfigurationError):
                agent_trace.configure("adversarial", _env={}, **settings)
        finally:
            agent_trace.shutdown(timeout_s=5)

    isolated(attack)


# -- compliance verdicts --------------------------------------------------------------------------

UNREADABLE_VERDICTS: dict[str, Any] = {
    "the text 'false'": "false",
    "compliant given as 'no'": {"compliant": "no"},
    "zero": 0,
}


@pytest.mark.parametrize("verdict", UNREADABLE_VERDICTS.values(), ids=list(UNREADABLE_VERDICTS))
def test_an_unreadable_verdict_is_not_counted_as_compliant(verdict: Any) -> None:
    @agent_trace.track_constitutional_compliance(policy="privacy")
    def check() -> Any:
        return verdict

    def attack() -> Any:
        with captured() as spans, agent_trace.session("review"):
            assert check() is verdict
        [span] = spans.find("policy_check privacy")
        return dict(span.attributes or {}).get("agent_trace.compliance.result")

    assert isolated(attack) != "compliant"


# -- the header check's compliance rate under sampling ---------------------------------------------


def _header_check_counts(**configure_kwargs: Any) -> dict[str, int]:
    """One request with the right hash and one with a wrong hash; compliance checks by result."""

    async def send(app: Any, value: str) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            response = await client.get("/act", headers={"constitutional-hash": value})
            return response.status_code

    with captured(constitution_hash=HASH, **configure_kwargs) as spans:
        app = FastAPI()

        @app.get("/act")
        async def act() -> dict[str, str]:
            return {"done": "yes"}

        app = instrument(app, constitutional_hash_mode="enforce")
        assert asyncio.run(send(app, HASH)) == 200
        assert asyncio.run(send(app, "0" * 16)) == 409
        points = spans.metrics().get("agent_trace.compliance.checks", [])
    return {str(labels["result"]): int(value) for labels, value in points}


def test_the_header_check_counts_both_results_when_traced() -> None:
    assert isolated(_header_check_counts) == {"compliant": 1, "violation": 1}


def test_the_header_check_counts_both_results_when_sampled_out() -> None:
    assert isolated(lambda: _header_check_counts(sample_rate=0.0)) == {
        "compliant": 1,
        "violation": 1,
    }


def test_excluding_the_index_page_keeps_enforcement_on_other_routes() -> None:
    async def send(app: Any) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            return (await client.get("/act")).status_code

    def attack() -> int:
        with captured(constitution_hash=HASH):
            app = FastAPI()

            @app.get("/act")
            async def act() -> dict[str, str]:
                return {"done": "yes"}

            instrumented = instrument(app, constitutional_hash_mode="enforce", excluded_urls=["/"])
            return asyncio.run(send(instrumented))

    assert isolated(attack) == 428


# -- a real uvicorn process -----------------------------------------------------------------------

SERVICE = textwrap.dedent(
    """
    from fastapi import FastAPI
    from opentelemetry import trace

    import agent_trace
    from agent_trace.integrations.fastapi import instrument

    agent_trace.configure("new-user-service")
    app = FastAPI()


    @app.get("/proposals/{pid}")
    async def proposal(pid: str) -> dict:
        span = trace.get_current_span()
        parent = getattr(span, "parent", None)
        return {
            "pid": pid,
            "trace_id": f"{span.get_span_context().trace_id:032x}",
            "parent_span_id": None if parent is None else f"{parent.span_id:016x}",
        }


    app = instrument(app, constitutional_hash_mode="enforce", excluded_urls=["/metrics"])
    """
)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Service:
    port: int
    process: ManagedProcess

    def get(self, path: str, headers: list[tuple[str, str]]) -> Answer:
        """GET with exactly these header lines (repeats kept), as a hostile client sends them."""
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
        try:
            connection.putrequest("GET", path, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        return Answer(response.status, body if isinstance(body, dict) else {})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    app_dir = tmp_path_factory.mktemp("new-user-service")
    (app_dir / "new_user_service.py").write_text(SERVICE, encoding="utf-8")
    port = free_port()
    env = {
        k: v
        for k, v in scrubbed_env().items()
        if not k.startswith(("AGENT_TRACE_", "CONSTITUTIONAL_"))
    }
    env.update(
        CONSTITUTIONAL_HASH=HASH,
        AGENT_TRACE_LOCAL_PATH=str(app_dir / "traces.jsonl"),
        AGENT_TRACE_LOCAL_FILE="true",
        PYTHONPATH=str(REPO),
    )
    process = start_uvicorn(
        "new-user-service",
        "new_user_service:app",
        port,
        env=env,
        cwd=app_dir,
        extra_args=["--app-dir", str(app_dir)],
    )
    running = Service(port, process)
    try:
        yield running
    finally:
        process.stop()


@pytest.mark.integration
def test_a_path_parameter_cannot_switch_off_enforcement(service: Service) -> None:
    answer = service.get("/proposals/metrics", [])
    assert answer.status == 428


@pytest.mark.integration
def test_enforcement_holds_for_an_ordinary_path_over_the_wire(service: Service) -> None:
    assert service.get("/proposals/p-1", []).status == 428
    assert service.get("/proposals/p-1", [("Constitutional-Hash", HASH)]).status == 200


WIRE_FRESH: dict[str, list[tuple[str, str]]] = {
    "two traceparent lines": [("traceparent", VALID), ("traceparent", VALID)],
    "traceparent with a trailing field": [("traceparent", VALID + "-ff")],
    "sentry-trace beside an empty traceparent": [
        ("traceparent", ""),
        ("sentry-trace", f"{TRACE_ID}-{PARENT_ID}-1"),
    ],
    "traceparent padded inside": [("traceparent", VALID.replace("-", " - ", 1))],
}


@pytest.mark.integration
@pytest.mark.parametrize("headers", WIRE_FRESH.values(), ids=list(WIRE_FRESH))
def test_untrustworthy_headers_over_the_wire_start_a_fresh_trace(
    service: Service, headers: list[tuple[str, str]]
) -> None:
    answer = service.get("/proposals/p-1", [("Constitutional-Hash", HASH), *headers])
    assert answer.status == 200
    assert answer.body["trace_id"] != TRACE_ID
    assert answer.body["parent_span_id"] is None


WIRE_CONTINUED: dict[str, list[tuple[str, str]]] = {
    "valid traceparent": [("traceparent", VALID)],
    "header name in odd case": [("TraceParent", VALID)],
    "surrounding whitespace the server strips": [("traceparent", f"  {VALID}\t")],
    "two hundred baggage lines": [("traceparent", VALID)]
    + [("baggage", f"k{i}=v{i}") for i in range(200)],
    "baggage far over the limit": [("traceparent", VALID), ("baggage", "k=" + "v" * 12_000)],
}


@pytest.mark.integration
@pytest.mark.parametrize("headers", WIRE_CONTINUED.values(), ids=list(WIRE_CONTINUED))
def test_a_valid_parent_over_the_wire_is_kept(
    service: Service, headers: list[tuple[str, str]]
) -> None:
    answer = service.get("/proposals/p-1", [("Constitutional-Hash", HASH), *headers])
    assert answer.status == 200
    assert answer.body["trace_id"] == TRACE_ID
    assert answer.body["parent_span_id"] == PARENT_ID

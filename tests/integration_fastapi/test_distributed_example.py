"""`python -m examples.distributed`, run as a user would, read back from Jaeger and Spotlight."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import psutil
import pytest

from examples.distributed import AGENTS, service_name
from tests.backends._support import scrubbed_env
from tests.backends.jaeger import Jaeger, iter_spans, process_tags, span_tags
from tests.backends.spotlight import Spotlight
from tests.integration_fastapi.conftest import ROOT

pytestmark = pytest.mark.integration

HASH = "d15ea5e5c0ffee00"
SERVICES = {"coordinator", *(service_name(agent) for agent in AGENTS)}
# Per session: the session, 3 turns, a round and its 3 votes in the coordinator; a server span
# and a policy check in each agent.
SPANS_PER_SESSION = 8 + 3 * 2


@pytest.fixture
def example_run(jaeger: Jaeger, spotlight: Spotlight) -> dict[str, Any]:
    env = scrubbed_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_grpc_endpoint,
            "SENTRY_DSN": spotlight.dsn,
            "CONSTITUTIONAL_HASH": HASH,
            "AGENT_TRACE_LOCAL_FILE": "false",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "examples.distributed", "--sessions", "2", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_one_command_starts_checks_and_stops_the_agents(example_run: dict[str, Any]) -> None:
    agents = example_run["agents"]
    assert [a["agent"] for a in agents] == list(AGENTS)
    for agent in agents:
        assert agent["url"].startswith("http://127.0.0.1:")
        assert agent["constitutional_hash"] == HASH
        assert agent["sinks"] == {"otlp": "ok", "sentry": "ok"}
        assert not psutil.pid_exists(agent["pid"]), f"{agent['service']} is still running"
    assert len({a["pid"] for a in agents}) == 3
    assert [s["outcome"] for s in example_run["sessions"]] == ["approved", "blocked"]
    assert example_run["refusal"]["status"] == 409
    assert example_run["refusal"]["body"]["error"] == "constitutional_hash_mismatch"
    assert example_run["coordinator_delivered"] is True


def test_one_session_across_four_processes_is_one_trace_in_jaeger(
    example_run: dict[str, Any], jaeger: Jaeger
) -> None:
    for session in example_run["sessions"]:
        trace = jaeger.wait_for_trace(
            session["trace_id"], min_spans=SPANS_PER_SESSION, timeout_s=15
        )
        assert not trace.get("warnings"), trace.get("warnings")
        spans = {s["spanID"]: s for s in iter_spans([trace])}
        assert len(spans) == SPANS_PER_SESSION
        assert {s["process"]["serviceName"] for s in spans.values()} == SERVICES

        parents = {}
        for span_id, span in spans.items():
            refs = [r for r in span["references"] if r["refType"] == "CHILD_OF"]
            parents[span_id] = refs[0]["spanID"] if refs else None
            if refs:
                assert refs[0]["spanID"] in spans, f"{span['operationName']} lost its parent"
        [root] = [s for s in spans.values() if parents[s["spanID"]] is None]
        assert root["operationName"] == "invoke_workflow ethical_review"
        assert span_tags(root)["gen_ai.conversation.id"] == session["session_id"]

        for agent in AGENTS:
            [server] = [
                s
                for s in spans.values()
                if s["process"]["serviceName"] == service_name(agent)
                and s["operationName"] == "POST /review"
            ]
            turn = spans[parents[server["spanID"]]]
            assert turn["operationName"] == f"invoke_agent {agent}"
            assert turn["process"]["serviceName"] == "coordinator"
            assert span_tags(turn)["span.kind"] == "client"
            assert span_tags(server)["span.kind"] == "server"
            assert parents[turn["spanID"]] == root["spanID"]
            assert span_tags(server)["agent_trace.constitution.hash"] == HASH
            assert process_tags(server)["telemetry.distro.name"] == "agent-trace"


def test_spotlight_shows_the_session_trace_on_all_four_services(
    example_run: dict[str, Any], spotlight: Spotlight
) -> None:
    trace_ids = {s["trace_id"] for s in example_run["sessions"]}

    def services_per_trace(envelopes: list[Any]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {t: set() for t in trace_ids}
        for envelope in envelopes:
            for transaction in envelope.payloads("transaction"):
                trace_id = transaction["contexts"]["trace"]["trace_id"]
                if trace_id in found:
                    found[trace_id].add(transaction["tags"]["service"])
        return found

    envelopes = spotlight.wait_for(
        lambda envs: all(v == SERVICES for v in services_per_trace(envs).values()),
        timeout_s=15,
        describe="transactions of all four services for each session",
    )
    for trace_id, services in services_per_trace(envelopes).items():
        assert services == SERVICES, trace_id

"""The metrics the library emits: names, low-cardinality attributes, and the Prometheus view."""

from __future__ import annotations

import socket
import urllib.request
import uuid

import pytest

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans


def _run_one_session(session_id: str) -> None:
    with agent_trace.session("review", session_id=session_id) as s:
        with s.turn("ethics"):
            pass
        with s.policy_check("privacy") as check:
            check.passed()
        with s.policy_check("privacy") as check:
            check.violation("pii", "high")
        with s.consensus_round("weighted_vote", participants=["ethics"]) as rnd:
            rnd.vote("ethics", "approve")
        agent_trace.monitor_performance_target("session_budget", 1.0, 2.0, unit="ms")


def test_every_documented_metric_is_emitted(agent_trace_spans: CapturedSpans) -> None:
    _run_one_session("s-1")
    metrics = agent_trace_spans.metrics()

    assert {
        "agent_trace.compliance.checks",
        "agent_trace.violations",
        "agent_trace.consensus.rounds",
        "agent_trace.consensus.round.duration",
        "agent_trace.turn.duration",
        "agent_trace.sessions",
        "agent_trace.session.duration",
        "agent_trace.target.breaches",
    } <= set(metrics)
    checks = {tuple(sorted(a.items())): v for a, v in metrics["agent_trace.compliance.checks"]}
    assert checks[(("policy", "privacy"), ("result", "compliant"))] == 1
    assert checks[(("policy", "privacy"), ("result", "violation"))] == 1
    assert metrics["agent_trace.violations"] == [({"violation_type": "pii", "severity": "high"}, 1)]
    assert metrics["agent_trace.consensus.rounds"] == [
        ({"algorithm": "weighted_vote", "outcome": "consensus"}, 1)
    ]
    assert metrics["agent_trace.target.breaches"] == [({"target": "session_budget"}, 1)]


def test_metric_attributes_never_carry_a_session_id(agent_trace_spans: CapturedSpans) -> None:
    ids = [f"session-{uuid.uuid4().hex}" for _ in range(5)]
    for session_id in ids:
        _run_one_session(session_id)

    for name, points in agent_trace_spans.metrics().items():
        for attributes, _ in points:
            assert not set(map(str, attributes.values())) & set(ids), name
    sessions = agent_trace_spans.metrics()["agent_trace.sessions"]
    assert sessions == [({"task_type": "review", "outcome": "completed"}, 5)]


def test_dropped_spans_are_a_metric_by_sink_and_reason() -> None:
    with capture_spans(
        otlp_endpoint="http://127.0.0.1:9",
        otlp_protocol="http",
        max_queue_size=4,
        max_export_batch_size=4,
        export_timeout_s=0.5,
    ) as spans:
        for i in range(40):
            _run_one_session(f"s{i}")
        assert agent_trace.force_flush(timeout_s=5) is False
        counted = {k: v for k, v in agent_trace.dropped_spans().items() if k[0] == "otlp"}
        dropped = spans.metrics()["agent_trace.spans.dropped"]

    by_reason = {(a["sink"], a["reason"]): v for a, v in dropped if a["sink"] == "otlp"}
    assert by_reason[("otlp", "queue_full")] > 0
    assert by_reason == counted


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration
def test_prometheus_endpoint_serves_the_converted_names_on_loopback() -> None:
    port = _free_port()
    with capture_spans(prometheus_port=port):
        _run_one_session("s-prom")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()

    for name in (
        "agent_trace_compliance_checks_total",
        "agent_trace_violations_total",
        "agent_trace_consensus_rounds_total",
        "agent_trace_consensus_round_duration_seconds_bucket",
        "agent_trace_turn_duration_seconds_bucket",
        "agent_trace_sessions_total",
        "agent_trace_target_breaches_total",
    ):
        assert name in body, name
    assert 'le="0.005"' in body
    assert 'result="violation"' in body


def test_metrics_count_sessions_that_sampling_left_out() -> None:
    with capture_spans(sample_rate=0.0) as spans:
        for i in range(3):
            _run_one_session(f"unsampled-{i}")
        metrics = spans.metrics()
        assert spans.spans == []

    assert metrics["agent_trace.sessions"] == [({"task_type": "review", "outcome": "completed"}, 3)]
    assert metrics["agent_trace.violations"] == [({"violation_type": "pii", "severity": "high"}, 3)]
    assert metrics["agent_trace.target.breaches"] == [({"target": "session_budget"}, 3)]
    turns = metrics["agent_trace.turn.duration"]
    assert turns == [({"agent": "ethics"}, 3)]


def test_instruments_record_only_when_a_reader_can_see_them() -> None:
    from opentelemetry.metrics import NoOpMeter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from agent_trace._metrics import Metrics

    assert Metrics(NoOpMeter("agent_trace"), dict).recording is False
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    assert Metrics(provider.get_meter("agent_trace"), dict).recording is True

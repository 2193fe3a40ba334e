"""The tail-sampling tier run for real by the Jaeger binary (collectors/jaeger/tail-sampler.yaml),
in front of a second Jaeger for storage and a recorder standing in for Sentry's OTLP endpoint.

300 sessions, 10 of which carry a constitutional violation: every violating session arrives
whole in both sinks, the others at the configured share, both sinks keep the same traces, and
no trace arrives in part.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

import agent_trace
from tests.backends._support import LOOPBACK
from tests.backends.jaeger import Jaeger
from tests.backends.otlp_recorder import OtlpHttpRecorder
from tests.collectors._collectors import JAEGER_DIR, ConfiguredProcess, free_ports, jaeger_binary

pytestmark = pytest.mark.integration

SESSIONS = 300
VIOLATING = set(range(5, SESSIONS, 30))  # 10 sessions
SHARE_PERCENT = 20
SPANS_PER_SESSION = 4  # session, two turns, one policy check
SENTRY_PATH = "/api/0/integration/otlp/v1/traces/"


def _session(index: int) -> str:
    with agent_trace.session("governance_review", session_id=f"s{index}") as s:
        for agent in ("ethics", "legal"):
            with s.turn(agent):
                pass
        try:
            with s.policy_check("privacy"):
                if index in VIOLATING:
                    raise agent_trace.ConstitutionalViolationError(
                        "shares personal data", "privacy", severity="high"
                    )
        except agent_trace.ConstitutionalViolationError:
            s.set_outcome("blocked")
    return s.trace_id


def test_violations_arrive_whole_in_both_sinks_and_the_rest_at_the_share(
    jaeger: Jaeger, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    grpc, http, health, metrics = free_ports(4)
    sampler = ConfiguredProcess(
        "jaeger-tail-sampler",
        jaeger_binary(),
        JAEGER_DIR / "tail-sampler.yaml",
        env={
            "SAMPLER_OTLP_GRPC_PORT": str(grpc),
            "SAMPLER_OTLP_HTTP_PORT": str(http),
            "SAMPLER_HEALTH_PORT": str(health),
            "SAMPLER_METRICS_PORT": str(metrics),
            "SAMPLER_DECISION_WAIT": "3s",
            "SAMPLER_PERCENTAGE": str(SHARE_PERCENT),
            "SAMPLER_LATENCY_THRESHOLD_MS": "60000",
            "JAEGER_OTLP_ENDPOINT": f"{LOOPBACK}:{jaeger.ports.otlp_grpc}",
            "SENTRY_OTLP_TRACES_ENDPOINT": f"{otlp_http_recorder.endpoint}{SENTRY_PATH}",
            "SENTRY_KEY": "tail-key",
        },
        health_url=f"http://{LOOPBACK}:{health}/status",
    )
    service = f"tail-{uuid.uuid4().hex[:8]}"
    sampler.start()
    try:
        agent_trace.configure(
            service, otlp_endpoint=f"http://{LOOPBACK}:{grpc}", local_file=False, _env={}
        )
        try:
            trace_ids = [_session(i) for i in range(SESSIONS)]
            assert agent_trace.force_flush(timeout_s=15)
        finally:
            agent_trace.shutdown(timeout_s=5)
        violating = {trace_ids[i] for i in VIOLATING}

        in_jaeger = _wait_until_stable(lambda: _jaeger_spans(jaeger, service))
        in_sentry = _wait_until_stable(lambda: _recorded_spans(otlp_http_recorder))
    finally:
        sampler.stop()

    # Every violating session, whole, in both sinks.
    assert violating <= set(in_jaeger), violating - set(in_jaeger)
    assert violating <= set(in_sentry), violating - set(in_sentry)
    # No partial traces anywhere, and both sinks kept exactly the same traces.
    assert set(in_jaeger.values()) == {SPANS_PER_SESSION}, in_jaeger
    assert set(in_sentry.values()) == {SPANS_PER_SESSION}, in_sentry
    assert set(in_jaeger) == set(in_sentry)
    # The rest at the configured share: 20 % of 290 is 58; a binomial stays within 25..100
    # except with negligible probability.
    others = len(set(in_jaeger) - violating)
    assert 25 <= others <= 100, others
    assert all(
        r.path == SENTRY_PATH and r.header("X-Sentry-Auth") == "Sentry sentry_key=tail-key"
        for r in otlp_http_recorder.requests
    )


def _jaeger_spans(jaeger: Jaeger, service: str) -> Counter[str]:
    traces = jaeger.find_traces(service, limit=1000)
    return Counter({t["traceID"]: len(t["spans"]) for t in traces})


def _recorded_spans(recorder: OtlpHttpRecorder) -> Counter[str]:
    return Counter(span.trace_id.hex() for span in recorder.spans())


def _wait_until_stable(read: object, quiet_s: float = 2.0, timeout_s: float = 40.0) -> Counter[str]:
    """Poll until the counts stop changing for `quiet_s` (decision wait plus batching)."""
    deadline = time.monotonic() + timeout_s
    last: Counter[str] = Counter()
    changed = time.monotonic()
    while time.monotonic() < deadline:
        now = read()  # type: ignore[operator]
        if now != last:
            last, changed = now, time.monotonic()
        elif last and time.monotonic() - changed >= quiet_s:
            return last
        time.sleep(0.25)
    return last

"""The whole Collector path, run for real: library -> gateway -> two samplers -> sinks.

The gateway (gateway.yaml) routes by trace id to two tail samplers (sampler.yaml), which keep
only errors, violations and slow sessions here (the probabilistic share is set to 0) and
send them to a real Jaeger and to a recorder in the place of Sentry's OTLP endpoint. The
violation is an attribute of one span of its trace, so a trace arrives whole only if every
one of its spans reached the sampler that saw that attribute.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import agent_trace
from agent_trace.testing import capture_spans
from tests.backends._support import LOOPBACK, BackendError, poll
from tests.backends.jaeger import Jaeger
from tests.backends.otlp_recorder import OtlpHttpRecorder
from tests.collectors._collectors import (
    OTELCOL_DIR,
    ConfiguredProcess,
    free_ports,
    metric_sum,
    metrics_text,
    otelcol_binary,
)

SENTRY_PATH = "/api/0/integration/otlp/v1/traces/"
SENTRY_KEY = "collector-path-key"

# Build on first use: minutes on a fresh machine, a moment afterwards.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


class Tier:
    """One Collector process of the path, with the ports the test talks to."""

    def __init__(
        self, name: str, binary: Path, config: Path, prefix: str, env: dict[str, str]
    ) -> None:
        self.grpc, http, health, self.metrics = free_ports(4)
        env = {
            f"{prefix}_OTLP_GRPC_PORT": str(self.grpc),
            f"{prefix}_OTLP_HTTP_PORT": str(http),
            f"{prefix}_HEALTH_PORT": str(health),
            f"{prefix}_METRICS_PORT": str(self.metrics),
            **env,
        }
        self.process = ConfiguredProcess(
            name, binary, config, env=env, health_url=f"http://{LOOPBACK}:{health}/"
        )

    def accepted_spans(self) -> float:
        # The Collector's own count of spans its OTLP receiver took in.
        text = metrics_text(self.metrics)
        return metric_sum(text, "otelcol_receiver_accepted_spans_total") or metric_sum(
            text, "otelcol_receiver_accepted_spans"
        )

    def cpu_s(self) -> float:
        assert self.process.pid is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)


@pytest.fixture
def tiers(jaeger: Jaeger) -> Iterator[tuple[Tier, list[Tier], OtlpHttpRecorder]]:
    try:
        otelcol = otelcol_binary()
    except BackendError as error:
        pytest.fail(str(error), pytrace=False)

    with OtlpHttpRecorder() as sentry:
        sampler_env = {
            "JAEGER_OTLP_ENDPOINT": f"{LOOPBACK}:{jaeger.ports.otlp_grpc}",
            "SENTRY_OTLP_TRACES_ENDPOINT": f"{sentry.endpoint}{SENTRY_PATH}",
            "SENTRY_KEY": SENTRY_KEY,
            "SAMPLER_DECISION_WAIT": "2s",
            "SAMPLER_PERCENTAGE": "0",
            "SAMPLER_LATENCY_THRESHOLD_MS": "300",
        }
        samplers = [
            Tier(
                f"otelcol-sampler-{i}",
                otelcol,
                OTELCOL_DIR / "sampler.yaml",
                "SAMPLER",
                sampler_env,
            )
            for i in range(2)
        ]
        endpoints = ",".join(f"{LOOPBACK}:{s.grpc}" for s in samplers)
        gateway = Tier(
            "otelcol-gateway",
            otelcol,
            OTELCOL_DIR / "gateway.yaml",
            "GATEWAY",
            {"SAMPLER_ENDPOINTS": endpoints},
        )
        started: list[Tier] = []
        try:
            for tier in [*samplers, gateway]:
                tier.process.start()
                started.append(tier)
            yield gateway, samplers, sentry
        finally:
            for tier in reversed(started):
                tier.process.stop()


def run_sessions(kind: str, count: int, trace_ids: dict[str, str]) -> None:
    """Sessions of one kind, each a turn, a passed check, a round and its votes."""
    for _ in range(count):
        try:
            with agent_trace.session("review", agents=["ethics", "legal"]) as s:
                trace_ids[s.trace_id] = kind
                with s.turn("ethics"):
                    pass
                with s.policy_check("fairness") as check:
                    check.passed()
                with s.consensus_round("weighted_vote", participants=["ethics", "legal"]) as rnd:
                    rnd.vote("ethics", "approve")
                    rnd.vote("legal", "approve")
                if kind == "violation":
                    with s.policy_check("privacy") as check:
                        check.violation("pii", severity="high")
                elif kind == "slow":
                    time.sleep(0.45)
                elif kind == "failed":
                    raise RuntimeError("the coordination failed")
                with s.turn("legal"):
                    pass
        except RuntimeError:
            pass


def test_kept_sessions_arrive_whole_in_both_sinks_and_the_rest_nowhere(
    tiers: tuple[Tier, list[Tier], OtlpHttpRecorder], jaeger: Jaeger
) -> None:
    gateway, samplers, sentry = tiers
    service = f"collector-path-{uuid.uuid4().hex[:8]}"
    kinds: dict[str, str] = {}

    with capture_spans(service, otlp_endpoint=f"http://{LOOPBACK}:{gateway.grpc}") as captured:
        run_sessions("clean", 40, kinds)
        run_sessions("violation", 5, kinds)
        run_sessions("failed", 3, kinds)
        run_sessions("slow", 2, kinds)
        assert agent_trace.force_flush(timeout_s=10)
        sent = Counter(f"{span.context.trace_id:032x}" for span in captured.spans)

    kept = {trace_id: sent[trace_id] for trace_id, kind in kinds.items() if kind != "clean"}
    assert len(kept) == 10 and len(sent) == 50

    def jaeger_traces() -> dict[str, int]:
        return {t["traceID"]: len(t["spans"]) for t in jaeger.find_traces(service, limit=1000)}

    in_jaeger = poll(
        lambda: jaeger_traces() if jaeger_traces() == kept else None,
        timeout_s=40,
        interval_s=0.5,
        describe=lambda: f"Jaeger has {jaeger_traces()}, expected {kept}",
    )
    # Every decision was taken within a few seconds of the others: give a late, wrong one the
    # time to show up before concluding that nothing else arrived.
    time.sleep(3)
    assert jaeger_traces() == in_jaeger == kept

    sentry_requests = [r for r in sentry.requests if r.spans]
    in_sentry = Counter(span.trace_id.hex() for r in sentry_requests for span in r.spans)
    assert {trace_id: n for trace_id, n in in_sentry.items() if trace_id in sent} == kept
    assert {r.path for r in sentry_requests} == {SENTRY_PATH}
    assert {r.header("X-Sentry-Auth") for r in sentry_requests} == {
        f"Sentry sentry_key={SENTRY_KEY}"
    }

    # Both samplers had a share of the traffic, and between them saw every span once.
    accepted = [sampler.accepted_spans() for sampler in samplers]
    assert all(n > 0 for n in accepted), accepted
    assert sum(accepted) == gateway.accepted_spans() == sum(sent.values())

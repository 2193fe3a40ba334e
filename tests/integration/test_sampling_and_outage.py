"""Sampling agrees across sinks; a Jaeger outage neither slows nor silently loses spans."""

from __future__ import annotations

import time
import uuid

import pytest

import agent_trace
from tests.backends.jaeger import Jaeger
from tests.backends.spotlight import Spotlight

pytestmark = pytest.mark.integration


def _short_session(index: int) -> agent_trace.Session:
    with agent_trace.session("sampling_probe", session_id=f"s{index}") as s, s.turn("ethics"):
        pass
    return s


def test_half_sampling_keeps_exactly_the_same_traces_in_jaeger_and_sentry(
    jaeger: Jaeger, spotlight: Spotlight
) -> None:
    service = f"sampling-{uuid.uuid4().hex[:8]}"
    agent_trace.configure(
        service,
        otlp_endpoint=jaeger.otlp_grpc_endpoint,
        sentry_dsn=spotlight.dsn,
        sample_rate=0.5,
        local_file=False,
        _env={},
    )
    try:
        sessions = [_short_session(i) for i in range(200)]
        assert agent_trace.force_flush(timeout_s=15)
    finally:
        agent_trace.shutdown(timeout_s=5)

    kept = {s.trace_id for s in sessions if s.span.get_span_context().trace_flags.sampled}
    # A fair coin over 200 traces: far from all or nothing (p < 1e-9 outside this band).
    assert 55 <= len(kept) <= 145

    transactions = spotlight.wait_for_transactions(len(kept), timeout_s=15)
    in_sentry = {t["contexts"]["trace"]["trace_id"] for t in transactions}

    def jaeger_ids() -> set[str]:
        return {t["traceID"] for t in jaeger.find_traces(service, limit=1000)}

    deadline = time.monotonic() + 15
    while jaeger_ids() != kept and time.monotonic() < deadline:
        time.sleep(0.2)
    assert jaeger_ids() == kept
    assert in_sentry == kept


def test_jaeger_restart_mid_run_delivers_queued_spans_and_counts_the_rest(
    jaeger: Jaeger,
) -> None:
    service = f"outage-{uuid.uuid4().hex[:8]}"
    agent_trace.configure(
        service,
        otlp_endpoint=jaeger.otlp_grpc_endpoint,
        max_queue_size=200,
        max_export_batch_size=50,
        export_timeout_s=2,
        local_file=False,
        _env={},
    )
    try:
        baseline = []
        for i in range(20):
            started = time.perf_counter()
            _short_session(i)
            baseline.append(time.perf_counter() - started)
        assert agent_trace.force_flush(timeout_s=10)

        jaeger.stop()
        drops_before = sum(agent_trace.dropped_spans().values())
        during = []
        sessions = []
        for i in range(150):
            started = time.perf_counter()
            sessions.append(_short_session(1000 + i))
            during.append(time.perf_counter() - started)
        jaeger.restart()
        agent_trace.force_flush(timeout_s=15)
        dropped = sum(agent_trace.dropped_spans().values()) - drops_before
    finally:
        agent_trace.shutdown(timeout_s=5)

    # Never blocked: a call that waited on the dead sink would take the 2 s export timeout
    # (the bound leaves room for a loaded machine stalling one call for a few 100 ms).
    assert max(during) < 1.0, (max(during), max(baseline))
    # Jaeger's memory storage restarted empty: what it has now is what arrived after restart.
    time.sleep(0.5)
    arrived = sum(len(t["spans"]) for t in jaeger.find_traces(service, limit=1000))
    created = 2 * len(sessions)
    assert arrived > 0, "no queued span arrived after the restart"
    assert dropped > 0, "300 spans into a 200-span queue must overflow"
    assert arrived + dropped == created, (arrived, dropped, agent_trace.dropped_spans())

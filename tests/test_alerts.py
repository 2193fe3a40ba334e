"""The built-in alert policy under scripted streams of events, and as Sentry receives it."""

from __future__ import annotations

from typing import Any

import pytest

import agent_trace
from agent_trace.alerts import AlertPolicy
from agent_trace.testing import capture_spans
from tests.backends.relay import normalization_problems
from tests.backends.spotlight import Spotlight


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def messages(self) -> list[str]:
        return [e["message"] for e in self.events]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TRACE = {"trace_id": "0" * 31 + "1", "span_id": "0" * 15 + "1"}


def policy(**kwargs: Any) -> tuple[AlertPolicy, Recorder, Clock]:
    recorder, clock = Recorder(), Clock()
    return AlertPolicy(clock=clock, **kwargs).bind(recorder, "abcdef0123456789"), recorder, clock


@pytest.mark.parametrize(("passed", "alerts"), [(970, 0), (969, 1)])
def test_compliance_alert_boundary_is_strictly_under_97_percent(passed: int, alerts: int) -> None:
    p, recorder, _ = policy(window_s=3600, min_checks=1000)
    for i in range(1000):
        p.compliance(i < passed, TRACE)
    assert len(recorder.events) == alerts
    assert p.alerting is bool(alerts)


def test_one_alert_then_one_recovery_and_nothing_in_between() -> None:
    p, recorder, clock = policy(window_s=60, min_checks=10)
    for _ in range(10):
        p.compliance(False, TRACE)
        clock.now += 1
    for _ in range(50):
        p.compliance(False, TRACE)
        clock.now += 1
    assert len(recorder.events) == 1
    assert recorder.events[0]["level"] == "warning"

    # A minute of clean checks pushes the failures out of the window.
    for _ in range(120):
        p.compliance(True, TRACE)
        clock.now += 1
    assert [e["fingerprint"][-1] for e in recorder.events] == ["alert", "recovery"]
    assert recorder.events[1]["level"] == "info"
    assert "recovered" in recorder.events[1]["message"]


def test_too_few_checks_in_the_window_never_alert() -> None:
    p, recorder, _ = policy(min_checks=20)
    for _ in range(19):
        p.compliance(False, TRACE)
    assert recorder.events == []


def test_violations_group_per_type_and_repeats_are_counted_not_sent() -> None:
    p, recorder, clock = policy(violation_cooldown_s=60)
    for _ in range(25):
        p.violation("privacy", "high", TRACE)
    p.violation("fairness", "medium", TRACE)
    clock.now += 61
    p.violation("privacy", "high", TRACE)

    fingerprints = [e["fingerprint"] for e in recorder.events]
    assert fingerprints == [
        ["agent_trace.constitutional_violation", "privacy"],
        ["agent_trace.constitutional_violation", "fairness"],
        ["agent_trace.constitutional_violation", "privacy"],
    ]
    assert recorder.events[2]["extra"]["suppressed_since_last"] == 24
    assert all(e["contexts"]["trace"] == TRACE for e in recorder.events)
    assert all(e["tags"]["constitutional_hash"] == "abcdef0123456789" for e in recorder.events)


def test_target_breaches_are_aggregated_per_interval() -> None:
    p, recorder, clock = policy(breach_interval_s=60)
    for value in range(1, 101):
        p.target("round_compute", False, 5.0 + value / 10, 5.0, "ms", TRACE)
        clock.now += 0.5
    p.target("round_compute", True, 1.0, 5.0, "ms", TRACE)
    p.flush()

    extras = [e["extra"] for e in recorder.events]
    assert sum(x["breaches"] for x in extras) == 100
    assert len(recorder.events) == 2
    assert extras[-1]["worst"] == pytest.approx(15.0)


def test_policy_refuses_a_threshold_over_one() -> None:
    with pytest.raises(ValueError, match="compliance_threshold"):
        AlertPolicy(compliance_threshold=97)


def test_model_feeds_the_policy_through_configure() -> None:
    p, recorder, _ = policy(min_checks=4)
    with capture_spans(alert_policy=p), agent_trace.session("review") as s:
        for i in range(4):
            with s.policy_check("privacy") as check:
                if i == 0:
                    check.violation("pii", "high")
                else:
                    check.passed()
    messages = recorder.messages()
    assert messages[0].startswith("Constitutional violation: pii")
    assert messages[1].startswith("Compliance rate 75.0 %")
    assert recorder.events[0]["contexts"]["trace"]["trace_id"] == s.trace_id


class _CheckFailed(Exception):
    pass


def test_checks_without_a_verdict_count_against_the_compliance_rate() -> None:
    @agent_trace.track_constitutional_compliance(policy="privacy")
    def check(verdict: object) -> object:
        return verdict

    p, recorder, _ = policy(min_checks=4)
    with capture_spans(alert_policy=p), agent_trace.session("review") as s:
        check(True)
        check(True)
        check("false")  # unreadable: no verdict
        with pytest.raises(_CheckFailed), s.policy_check("privacy"):
            raise _CheckFailed("policy service down")

    # Two compliant of four, as the Prometheus rule counts result=error against the rate.
    assert recorder.messages() == ["Compliance rate 50.0 % is under 97.0 % (4 checks, 300 s)"]
    assert recorder.events[0]["contexts"]["trace"]["trace_id"] == s.trace_id


@pytest.mark.integration
def test_alert_events_reach_sentry_grouped_and_linked(spotlight: Spotlight) -> None:
    agent_trace.configure(
        "alerts",
        sentry_dsn=spotlight.dsn,
        local_file=False,
        _env={},
        alert_policy=AlertPolicy(min_checks=5),
    )
    try:
        with agent_trace.session("review") as s:
            for i in range(10):
                with s.policy_check("privacy") as check:
                    if i % 2:
                        check.violation("pii", "high")
                    else:
                        check.passed()
        assert agent_trace.force_flush(timeout_s=10)
    finally:
        agent_trace.shutdown(timeout_s=5)

    events = spotlight.wait_for_error_events(2)
    # Five violations of one type: one event. Rate under 97 %: one alert.
    assert len(events) == 2, [e.get("message") for e in events]
    by_fingerprint = {tuple(e["fingerprint"]): e for e in events}
    assert set(by_fingerprint) == {
        ("agent_trace.constitutional_violation", "pii"),
        ("agent_trace.compliance_rate", "alert"),
    }
    for event in events:
        assert event["contexts"]["trace"]["trace_id"] == s.trace_id
        assert normalization_problems(event) == []

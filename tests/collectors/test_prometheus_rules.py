"""The alert rules and the Prometheus config, checked and unit-tested by promtool.

collectors/prometheus/alerts_test.yml holds the promtool unit tests (series fed in, alerts
expected at each boundary); the tests here run them, and also run them against altered
copies of the rules to show that they notice a moved threshold.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.collectors._collectors import PROMETHEUS_DIR, load_yaml, promtool, run

ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
REQUIRED_ALERTS = {
    "ConstitutionalViolation",
    "ComplianceRateLow",
    "AgentCoordinationFailed",
    "ConsensusRoundLatencyP99High",
}


def test_alert_rules_pass_promtool_check() -> None:
    result = run([promtool(), "check", "rules", str(ALERTS)])

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in result.stdout


def test_alert_unit_tests_pass() -> None:
    result = run([promtool(), "test", "rules", str(ALERTS_TEST)], cwd=PROMETHEUS_DIR)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_config_is_valid_and_loads_the_alert_rules() -> None:
    result = run([promtool(), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in result.stdout


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    tests = load_yaml(ALERTS_TEST)["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])

    assert firing == REQUIRED_ALERTS
    assert silent == REQUIRED_ALERTS


def test_violation_and_failure_alerts_fire_without_delay() -> None:
    rules = {
        rule["alert"]: rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]
    }

    assert "for" not in rules["ConstitutionalViolation"]
    assert "for" not in rules["AgentCoordinationFailed"]


@pytest.mark.parametrize(
    ("original", "altered", "why"),
    [
        ("< 0.97 - 1e-9", "< 0.969", "96.9 % would no longer fire"),
        ("< 0.97 - 1e-9", "<= 0.97", "97.0 % would fire"),
        ("< 0.97 - 1e-9", "< 0.97", "an exact 97.0 % fires when increase() extrapolates"),
        (") > 0.005", ") > 0.0055", "5.45 ms would no longer fire"),
        (") > 0.005", ") > 0.0049", "4.997 ms would fire"),
        ("unless agent_trace_violations_total offset 5m", "", "a first violation would be missed"),
        ('outcome="failed"}[5m]', 'outcome="completed"}[5m]', "the wrong outcome would fire"),
    ],
)
def test_unit_tests_catch_an_altered_rule(
    tmp_path: Path, original: str, altered: str, why: str
) -> None:
    text = ALERTS.read_text()
    assert original in text
    changed = text.replace(original, altered)
    if not altered:
        # Drop the whole second clause of the violation alert, keeping the rule valid.
        start = text.index("or\n", text.index("increase(agent_trace_violations_total"))
        end = text.index(',\n            "violation_severity"')
        changed = text[:start] + text[end:]
    (tmp_path / "alerts.yml").write_text(changed)
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    assert run([promtool(), "check", "rules", str(tmp_path / "alerts.yml")]).returncode == 0

    result = run([promtool(), "test", "rules", "alerts_test.yml"], cwd=tmp_path)

    assert result.returncode != 0, why
    assert "FAILED" in result.stdout + result.stderr

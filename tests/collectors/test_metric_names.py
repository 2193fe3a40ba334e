"""The dashboard and the alert rules ask only for metrics the library emits.

The names are those of the public API contract (the metric list of the README and of
`agent_trace/_metrics.py`, as Prometheus names them after the OpenTelemetry exporter's
conversion). The last test scrapes the library's own Prometheus endpoint, so the list here
cannot drift from what a process really serves.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import agent_trace
from agent_trace.testing import capture_spans
from tests.backends._support import LOOPBACK, free_port
from tests.collectors._collectors import GRAFANA_DIR, PROMETHEUS_DIR, load_yaml, promtool, run
from tests.collectors.promql import label_values_metric, metric_names, substitute_grafana_variables

COUNTERS = {
    "agent_trace_compliance_checks_total",
    "agent_trace_violations_total",
    "agent_trace_consensus_rounds_total",
    "agent_trace_sessions_total",
    "agent_trace_target_breaches_total",
    "agent_trace_spans_dropped_total",
}
HISTOGRAMS = {
    "agent_trace_consensus_round_duration_seconds",
    "agent_trace_turn_duration_seconds",
    "agent_trace_session_duration_seconds",
}
API_METRICS = COUNTERS | {
    f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")
}

DASHBOARD = GRAFANA_DIR / "dashboards" / "agent-trace.json"
ALERTS = PROMETHEUS_DIR / "alerts.yml"


def dashboard_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression of the dashboard, keyed by where it is."""
    queries: dict[str, str] = {}

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                queries[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = (
            variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        )
        selector = label_values_metric(query)
        assert selector is not None, f"variable {variable['name']}: not label_values(metric, label)"
        queries[f"variable {variable['name']!r}"] = selector
    return queries


def alert_expressions() -> dict[str, str]:
    return {
        rule["alert"]: rule["expr"]
        for group in load_yaml(ALERTS)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_metric_name_reader_finds_selectors_and_ignores_the_rest() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{job=~"$job"}[$__rate_interval])))'
        ' / on (job) group_left (x) b_total offset 5m < 0.97 - 1e-9 or {__name__="c"}'
    )

    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert metric_names('{__name__=~"agent_trace_.+"}') == {'__name__=~"agent_trace_.+"'}
    assert metric_names('label_replace(up, "dst", "$1", "src", "(.*)")') == {"up"}


def test_dashboard_queries_use_only_api_metrics() -> None:
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))

    assert len(queries) >= 10
    unknown = {
        where: sorted(metric_names(expr) - API_METRICS)
        for where, expr in queries.items()
        if metric_names(expr) - API_METRICS
    }
    assert unknown == {}
    assert all(metric_names(expr) for expr in queries.values())


def test_alert_rules_use_only_api_metrics() -> None:
    expressions = alert_expressions()

    assert set(expressions) == {
        "ConstitutionalViolation",
        "ComplianceRateLow",
        "AgentCoordinationFailed",
        "ConsensusRoundLatencyP99High",
    }
    for alert, expr in expressions.items():
        names = metric_names(expr)
        assert names, alert
        assert names <= API_METRICS, (alert, sorted(names - API_METRICS))


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    exprs = list(queries.values())

    def some(predicate: Any) -> bool:
        return any(predicate(e) for e in exprs)

    # Compliance rate: compliant checks over all checks.
    assert some(
        lambda e: 'result="compliant"' in e and e.count("agent_trace_compliance_checks_total") == 2
    )
    # Violations by type and severity; consensus outcomes; drops by sink and reason.
    assert some(
        lambda e: "agent_trace_violations_total" in e and "by (violation_type, severity)" in e
    )
    assert some(lambda e: "agent_trace_consensus_rounds_total" in e and "outcome" in e)
    assert some(lambda e: "agent_trace_spans_dropped_total" in e and "by (sink, reason)" in e)
    # p50, p95 and p99 of round and turn durations.
    for histogram in (
        "agent_trace_consensus_round_duration_seconds_bucket",
        "agent_trace_turn_duration_seconds_bucket",
    ):
        quantiles = {
            e.split("histogram_quantile(")[1].split(",")[0]
            for e in exprs
            if histogram in e and "histogram_quantile(" in e
        }
        assert quantiles == {"0.5", "0.95", "0.99"}, histogram


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses every expression of a rules file: the dashboard's queries, as recording
    # rules, go through Prometheus' own parser.
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)}
                    for i, expr in enumerate(queries.values())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps(rules))

    result = run([promtool(), "check", "rules", str(path)])

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_dashboard_panels_use_the_provisioned_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [source] = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "agent-trace.yaml")[
        "datasources"
    ]

    uids = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    } | {variable["datasource"]["uid"] for variable in dashboard["templating"]["list"]}
    assert uids == {source["uid"]}
    assert source["type"] == "prometheus"


def _scripted_sessions() -> None:
    """One of everything the rules and panels count, except dropped spans."""
    with agent_trace.session("review", agents=["ethics", "legal"]) as s:
        with s.turn("ethics"):
            pass
        with s.policy_check("privacy") as check:
            check.passed()
        with s.policy_check("privacy") as check:
            check.violation("pii", severity="high")
        with s.consensus_round("weighted_vote", participants=["ethics", "legal"]) as rnd:
            rnd.vote("ethics", "approve")
            rnd.vote("legal", "approve")
    agent_trace.monitor_performance_target("round_compute", 5.0, 7.5, unit="ms")
    with pytest.raises(RuntimeError), agent_trace.session("review"):
        raise RuntimeError("the coordination failed")


@pytest.mark.integration
def test_library_serves_every_metric_the_rules_and_dashboard_use() -> None:
    port = free_port()
    with capture_spans(prometheus_port=port):
        _scripted_sessions()
        url = f"http://{LOOPBACK}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()

    served = {
        line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and line[0] != "#"
    }
    used = set().union(*(metric_names(e) for e in alert_expressions().values()))
    used |= set().union(
        *(metric_names(e) for e in dashboard_queries(json.loads(DASHBOARD.read_text())).values())
    )
    # Dropped spans are counted only once a sink loses one; the scripted sessions lose none.
    assert used - {"agent_trace_spans_dropped_total"} <= served, sorted(used - served)
    assert 'outcome="failed"' in body
    assert 'result="violation"' in body

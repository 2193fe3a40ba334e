"""The Collector and Jaeger configs, checked by the binaries that will run them.

`validate` parses a config and checks each component's settings, but the tail_sampling
processor only builds its policies when it starts (a misspelt policy type passes `validate`),
so every config that can run here without outside services is also started on free
127.0.0.1 ports until its health check answers, and its listening sockets are inspected.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.backends._support import LOOPBACK, BackendError, listening_sockets
from tests.collectors._collectors import (
    JAEGER_DIR,
    OTELCOL_DIR,
    ConfiguredProcess,
    free_ports,
    jaeger_binary,
    load_yaml,
    otelcol_binary,
    run,
    running,
)

GATEWAY = OTELCOL_DIR / "gateway.yaml"
SAMPLER = OTELCOL_DIR / "sampler.yaml"
TAIL_SAMPLER = JAEGER_DIR / "tail-sampler.yaml"
JAEGER_CONFIGS = ["all-in-one.yaml", "collector.yaml", "query.yaml", "tail-sampler.yaml"]

# The first test to ask for the Collector builds it: minutes on a fresh machine.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def otelcol() -> Path:
    try:
        return otelcol_binary()
    except BackendError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def jaeger() -> Path:
    try:
        return jaeger_binary()
    except BackendError as error:
        pytest.fail(str(error), pytrace=False)


def used_components(*configs: Path) -> dict[str, set[str]]:
    """Component types (the part before any `/name`) each kind of a config's pipelines uses."""
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    used["extensions"] = set()
    for path in configs:
        config = load_yaml(path)
        for pipeline in config["service"]["pipelines"].values():
            for kind in ("receivers", "processors", "exporters"):
                used[kind] |= {component.split("/")[0] for component in pipeline.get(kind, [])}
        used["extensions"] |= {e.split("/")[0] for e in config["service"].get("extensions", [])}
    return used


def gateway_env(sampler_endpoints: str) -> tuple[dict[str, str], int, int]:
    grpc, http, health, metrics = free_ports(4)
    env = {
        "GATEWAY_OTLP_GRPC_PORT": str(grpc),
        "GATEWAY_OTLP_HTTP_PORT": str(http),
        "GATEWAY_HEALTH_PORT": str(health),
        "GATEWAY_METRICS_PORT": str(metrics),
        "SAMPLER_ENDPOINTS": sampler_endpoints,
    }
    return env, grpc, health


def sampler_env(**overrides: str) -> tuple[dict[str, str], int, int]:
    grpc, http, health, metrics = free_ports(4)
    env = {
        "SAMPLER_OTLP_GRPC_PORT": str(grpc),
        "SAMPLER_OTLP_HTTP_PORT": str(http),
        "SAMPLER_HEALTH_PORT": str(health),
        "SAMPLER_METRICS_PORT": str(metrics),
        **overrides,
    }
    return env, grpc, health


def assert_listens_on_loopback_only(process: ConfiguredProcess, expected_ports: set[int]) -> None:
    assert process.pid is not None
    sockets = listening_sockets(process.pid)
    assert [s for s in sockets if not s.is_loopback_only] == []
    assert expected_ports <= {s.port for s in sockets}


# --- the configs themselves ---------------------------------------------------------------


def test_tail_sampler_on_jaeger_runs_the_same_pipeline_as_sampler() -> None:
    sampler, tail_sampler = load_yaml(SAMPLER), load_yaml(TAIL_SAMPLER)

    for section in ("receivers", "processors", "exporters"):
        assert tail_sampler[section] == sampler[section], section
    assert tail_sampler["service"]["pipelines"] == sampler["service"]["pipelines"]
    assert tail_sampler["service"]["telemetry"] == sampler["service"]["telemetry"]


def test_sampler_keeps_errors_violations_slow_sessions_and_a_share() -> None:
    policies = {p["name"]: p for p in load_yaml(SAMPLER)["processors"]["tail_sampling"]["policies"]}

    assert policies["errors"]["status_code"]["status_codes"] == ["ERROR"]
    compliance = policies["compliance-violations"]["string_attribute"]
    assert (compliance["key"], compliance["values"]) == (
        "agent_trace.compliance.result",
        ["violation"],
    )
    constitutional = policies["constitutional-violations"]["string_attribute"]
    assert (constitutional["key"], constitutional["values"]) == (
        "error.type",
        ["constitutional_violation"],
    )
    assert (
        policies["slow-sessions"]["latency"]["threshold_ms"]
        == "${env:SAMPLER_LATENCY_THRESHOLD_MS:-2000}"
    )
    assert (
        policies["baseline-share"]["probabilistic"]["sampling_percentage"]
        == "${env:SAMPLER_PERCENTAGE:-10}"
    )


def test_sampler_sends_to_sentry_with_the_key_header() -> None:
    sentry = load_yaml(SAMPLER)["exporters"]["otlphttp/sentry"]

    assert sentry["traces_endpoint"].startswith(
        "${env:SENTRY_OTLP_TRACES_ENDPOINT:-http://127.0.0.1:"
    )
    assert sentry["traces_endpoint"].endswith("/api/0/integration/otlp/v1/traces/}")
    assert sentry["headers"] == {"X-Sentry-Auth": "Sentry sentry_key=${env:SENTRY_KEY:-public}"}


# --- Jaeger -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", JAEGER_CONFIGS)
def test_jaeger_validates_config(jaeger: Path, name: str) -> None:
    result = run([str(jaeger), "validate", "--config", f"file:{JAEGER_DIR / name}"])

    assert result.returncode == 0, result.stdout + result.stderr


def test_jaeger_validate_rejects_a_broken_config(jaeger: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(TAIL_SAMPLER.read_text().replace("decision_wait:", "decision_wiat:"))

    result = run([str(jaeger), "validate", "--config", f"file:{broken}"])

    assert result.returncode != 0
    assert "decision_wiat" in result.stderr


@pytest.mark.integration
def test_jaeger_all_in_one_starts_on_loopback(jaeger: Path) -> None:
    grpc, http, query_http, query_grpc, health, metrics = free_ports(6)
    env = {
        "JAEGER_OTLP_GRPC_PORT": str(grpc),
        "JAEGER_OTLP_HTTP_PORT": str(http),
        "JAEGER_QUERY_HTTP_PORT": str(query_http),
        "JAEGER_QUERY_GRPC_PORT": str(query_grpc),
        "JAEGER_HEALTH_PORT": str(health),
        "JAEGER_METRICS_PORT": str(metrics),
    }
    process = ConfiguredProcess(
        "jaeger-all-in-one",
        jaeger,
        JAEGER_DIR / "all-in-one.yaml",
        env=env,
        health_url=f"http://{LOOPBACK}:{health}/status",
    )

    with running(process):
        assert_listens_on_loopback_only(process, {grpc, http, query_http, query_grpc, health})


@pytest.mark.integration
def test_jaeger_tail_sampler_starts_on_loopback(jaeger: Path) -> None:
    env, grpc, health = sampler_env(SAMPLER_DECISION_WAIT="2s")
    process = ConfiguredProcess(
        "jaeger-tail-sampler",
        jaeger,
        TAIL_SAMPLER,
        env=env,
        health_url=f"http://{LOOPBACK}:{health}/status",
    )

    with running(process):
        assert_listens_on_loopback_only(process, {grpc, health})


@pytest.mark.integration
def test_jaeger_tail_sampler_refuses_to_start_with_an_unknown_policy(
    jaeger: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "tail-sampler.yaml"
    broken.write_text(TAIL_SAMPLER.read_text().replace("type: latency", "type: latencies"))
    env, _, health = sampler_env()
    assert run([str(jaeger), "validate", "--config", f"file:{broken}"]).returncode == 0
    process = ConfiguredProcess(
        "jaeger-broken-sampler",
        jaeger,
        broken,
        env=env,
        health_url=f"http://{LOOPBACK}:{health}/status",
    )

    with pytest.raises(BackendError, match="unknown sampling policy type latencies"):
        process.start(timeout_s=20)
    process.stop()


# --- the OpenTelemetry Collector ----------------------------------------------------------


def test_collector_build_has_exactly_the_components_the_configs_use(otelcol: Path) -> None:
    result = run([str(otelcol), "components"])
    assert result.returncode == 0, result.stderr
    listing = yaml.safe_load(result.stdout)

    built = {
        kind: {component["name"] for component in listing.get(kind) or []}
        for kind in ("receivers", "processors", "exporters", "extensions")
    }
    assert built == used_components(GATEWAY, SAMPLER)


@pytest.mark.parametrize("config", [GATEWAY, SAMPLER], ids=lambda p: p.name)
def test_collector_validates_config(otelcol: Path, config: Path) -> None:
    result = run([str(otelcol), "validate", "--config", f"file:{config}"])

    assert result.returncode == 0, result.stdout + result.stderr


def test_collector_validate_rejects_a_broken_gateway(otelcol: Path, tmp_path: Path) -> None:
    broken = tmp_path / "gateway.yaml"
    broken.write_text(GATEWAY.read_text().replace("routing_key: traceID", "routing_key: sessionID"))

    result = run([str(otelcol), "validate", "--config", f"file:{broken}"])

    assert result.returncode != 0
    assert "sessionID" in result.stderr


def test_gateway_reads_the_sampler_list_from_one_variable(otelcol: Path) -> None:
    env = {"SAMPLER_ENDPOINTS": "127.0.0.1:5317,127.0.0.1:5417"}
    result = run(
        [str(otelcol), "print-config", "--feature-gates=otelcol.printInitialConfig",
         "--config", f"file:{GATEWAY}"],
        env=env,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    resolver = yaml.safe_load(result.stdout)["exporters"]["loadbalancing"]["resolver"]
    assert resolver["static"]["hostnames"] == ["127.0.0.1:5317", "127.0.0.1:5417"]


@pytest.fixture
def sampler_process(otelcol: Path) -> Iterator[tuple[ConfiguredProcess, int]]:
    env, grpc, health = sampler_env(SAMPLER_DECISION_WAIT="2s")
    process = ConfiguredProcess(
        "otelcol-sampler", otelcol, SAMPLER, env=env, health_url=f"http://{LOOPBACK}:{health}/"
    )
    with running(process):
        yield process, grpc


@pytest.mark.integration
def test_collector_sampler_starts_on_loopback(
    sampler_process: tuple[ConfiguredProcess, int],
) -> None:
    process, grpc = sampler_process

    assert_listens_on_loopback_only(process, {grpc})


@pytest.mark.integration
def test_collector_gateway_starts_on_loopback(
    otelcol: Path, sampler_process: tuple[ConfiguredProcess, int]
) -> None:
    _, sampler_grpc = sampler_process
    env, grpc, health = gateway_env(f"{LOOPBACK}:{sampler_grpc}")
    process = ConfiguredProcess(
        "otelcol-gateway", otelcol, GATEWAY, env=env, health_url=f"http://{LOOPBACK}:{health}/"
    )

    with running(process):
        assert_listens_on_loopback_only(process, {grpc, health})

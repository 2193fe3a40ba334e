"""Every config under collectors/ listens on and points at 127.0.0.1 unless told otherwise.

For the Collector and Jaeger configs, "by default" means with every `${env:NAME:-default}`
at its default (and an unset variable with none as empty, which is how a listener ends up on
every interface). docker-compose.yml gets its own rules: ports published on the host's
127.0.0.1 only, containers reaching each other by service name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.collectors._collectors import (
    COLLECTORS,
    COMPOSE_FILE,
    PROMETHEUS_DIR,
    env_names,
    load_yaml,
    with_env_defaults,
)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Keys whose value is an address even without a port or scheme.
ADDRESS_KEYS = {
    "host",
    "hostname",
    "hostnames",
    "endpoint",
    "address",
    "addr",
    "targets",
    "server_urls",
    "url",
}
# Test data, not configuration: the promtool unit tests label their series with made-up
# instance addresses.
NOT_CONFIG = {PROMETHEUS_DIR / "alerts_test.yml", COMPOSE_FILE}

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://(\[[^\]]*\]|[^/:\s,\"']*)")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]*\]|[A-Za-z0-9_.-]*):(\d{1,5})$")


def config_files() -> list[Path]:
    files = sorted(p for p in COLLECTORS.rglob("*") if p.suffix in {".yml", ".yaml"})
    return [p for p in files if p not in NOT_CONFIG]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, key, value) for every string in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    elif isinstance(node, str | int) and not isinstance(node, bool):
        key = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
        yield path, key, str(node)


def hosts_in(key: str, value: str) -> list[str]:
    """The hosts a config value names: in URLs, host:port pairs, or an address-valued key."""
    found = [m.group(1) for m in _URL.finditer(value)]
    if found:
        return found
    hosts = []
    for part in value.split(","):
        part = part.strip()
        match = _HOST_PORT.match(part)
        if match:
            hosts.append(match.group(1))
        elif key in ADDRESS_KEYS and part:
            hosts.append(part)
    return hosts


def non_loopback(document: Any, allowed: set[str] = LOOPBACK_HOSTS) -> list[str]:
    problems = []
    for path, key, value in walk(document):
        for host in hosts_in(key, value):
            if host not in allowed:
                problems.append(f"{path}: {value!r} (host {host or '(every interface)'!r})")
    return problems


@pytest.mark.parametrize(
    ("snippet", "bad"),
    [
        ("endpoint: 127.0.0.1:4317", False),
        ("endpoint: localhost:4317", False),
        ("url: http://[::1]:9090", False),
        ("hostnames: [127.0.0.1:5317, 127.0.0.1:5417]", False),
        ("endpoint: 0.0.0.0:4317", True),
        ("endpoint: :4317", True),
        ("traces_endpoint: https://o1.ingest.example.io/api/1/integration/otlp/v1/traces/", True),
        ("host: 0.0.0.0", True),
        ("targets: ['agents.internal:9464']", True),
        ("server_urls: http://127.0.0.1:9200,http://es.example:9200", True),
        ("path: /status", False),
        ("level: info", False),
    ],
)
def test_address_checker_tells_loopback_from_the_rest(snippet: str, bad: bool) -> None:
    assert bool(non_loopback(yaml.safe_load(snippet))) is bad


def test_there_are_configs_to_check() -> None:
    names = {p.relative_to(COLLECTORS).as_posix() for p in config_files()}

    assert {
        "otel-collector/gateway.yaml",
        "otel-collector/sampler.yaml",
        "jaeger/all-in-one.yaml",
        "jaeger/collector.yaml",
        "jaeger/query.yaml",
        "jaeger/tail-sampler.yaml",
        "prometheus/prometheus.yml",
        "grafana/provisioning/datasources/agent-trace.yaml",
    } <= names


@pytest.mark.parametrize("path", config_files(), ids=lambda p: p.relative_to(COLLECTORS).as_posix())
def test_config_uses_only_loopback_by_default(path: Path) -> None:
    document = yaml.safe_load(with_env_defaults(path.read_text()))

    assert non_loopback(document) == []


@pytest.mark.parametrize("path", config_files(), ids=lambda p: p.relative_to(COLLECTORS).as_posix())
def test_every_listener_names_its_host(path: Path) -> None:
    # `endpoint: :4317`, or a variable with no default before the colon, listens everywhere.
    text = with_env_defaults(path.read_text())

    assert re.findall(r"^\s*endpoint:\s*[\"']?:\d+", text, flags=re.MULTILINE) == []
    assert "0.0.0.0" not in text


# --- docker-compose.yml -------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment with `${NAME:-default}` at its default, as compose would set it."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: re.sub(r"\$\{[A-Za-z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def mounted_files(service: dict[str, Any]) -> list[Path]:
    files = []
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0]
        if source.startswith("./"):
            path = (COMPOSE_FILE.parent / source).resolve()
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            )
    return files


def test_compose_publishes_ports_on_loopback_only() -> None:
    published = [
        (name, port)
        for name, service in compose()["services"].items()
        for port in service.get("ports", [])
    ]

    assert published
    assert [(n, p) for n, p in published if not str(p).startswith("127.0.0.1:")] == []


def test_compose_host_network_services_bind_loopback() -> None:
    services = compose()["services"]
    on_host = {name for name, s in services.items() if s.get("network_mode") == "host"}

    assert on_host == {"prometheus", "grafana"}
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    assert compose_env(services["grafana"])["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert all(not services[name].get("ports") for name in on_host)


def test_compose_services_reach_only_each_other_and_loopback() -> None:
    services = compose()["services"]
    allowed = LOOPBACK_HOSTS | set(services)

    for name, service in services.items():
        for key, value in compose_env(service).items():
            if key.endswith("_LISTEN_HOST"):
                # Inside a bridged container every interface is the container's own.
                assert service.get("network_mode") != "host", (name, key)
                assert value in {"0.0.0.0", "127.0.0.1"}, (name, key, value)
                continue
            bad = [h for h in hosts_in(key.lower(), value) if h not in allowed]
            assert bad == [], (name, key, value)


def test_compose_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)


def test_compose_mounts_existing_files_and_sets_only_variables_they_read() -> None:
    for name, service in compose()["services"].items():
        files = mounted_files(service)
        assert files, name
        read: set[str] = set()
        for path in files:
            assert path.is_file(), (name, path)
            read |= env_names(path)
            # Grafana's provisioning files use plain ${NAME}.
            read |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
        own_settings = {k for k in compose_env(service) if k.startswith("GF_")}
        assert set(compose_env(service)) - own_settings <= read, name


def test_compose_publishes_the_ports_its_configs_listen_on() -> None:
    for name, service in compose()["services"].items():
        if not service.get("ports"):
            continue
        env = compose_env(service)
        listening = set()
        for path in mounted_files(service):
            text = with_env_defaults(path.read_text(), env)
            listening |= {int(p) for p in re.findall(r"endpoint: [\w.]+:(\d+)", text)}
            listening |= {int(p) for p in re.findall(r"port: (\d+)", text)}
        container_ports = {int(str(p).rsplit(":", 1)[1]) for p in service["ports"]}
        assert container_ports <= listening, (name, sorted(container_ports - listening))

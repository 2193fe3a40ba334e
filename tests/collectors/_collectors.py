"""What the tests of collectors/ share: paths, the binaries, and short-lived processes.

The binaries come from the same places as the rest of the suite: promtool from Debian's
`prometheus` package and Jaeger from `tests/backends/setup.sh`; the OpenTelemetry Collector is
built on first use by `collectors/otel-collector/build.sh` into a cache outside the repository.
A missing one fails the test that needs it, naming the fix; nothing is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.backends._support import (
    LOOPBACK,
    SETUP_HINT,
    BackendError,
    ManagedProcess,
    free_port,
    http_request,
    poll,
    scrubbed_env,
)
from tests.backends.jaeger import cached_binary as jaeger_cached_binary

REPO = Path(__file__).resolve().parents[2]
COLLECTORS = REPO / "collectors"
OTELCOL_DIR = COLLECTORS / "otel-collector"
JAEGER_DIR = COLLECTORS / "jaeger"
PROMETHEUS_DIR = COLLECTORS / "prometheus"
GRAFANA_DIR = COLLECTORS / "grafana"
COMPOSE_FILE = COLLECTORS / "docker-compose.yml"

# `${env:NAME}` or `${env:NAME:-default}`, the Collector's (and Jaeger's) expansion syntax.
ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def env_names(path: Path) -> set[str]:
    """Names of the environment variables a Collector or Jaeger config reads."""
    return {match.group(1) for match in ENV_REFERENCE.finditer(path.read_text())}


def with_env_defaults(text: str, env: Mapping[str, str] | None = None) -> str:
    """The config text as the Collector would see it with only `env` set (defaults otherwise)."""
    env = env or {}

    def expand(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        return env.get(name, default if default is not None else "")

    return ENV_REFERENCE.sub(expand, text)


def promtool() -> str:
    """Path of promtool; BackendError naming the fix when it is not installed."""
    found = shutil.which("promtool")
    if found is None:
        raise BackendError(f"promtool is not installed (Debian package `prometheus`): {SETUP_HINT}")
    return found


def run(
    args: list[str], *, timeout_s: float = 60.0, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Runs a command to completion with its output captured as text (never raises on status)."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
    )


def jaeger_binary() -> Path:
    binary = jaeger_cached_binary()
    if not binary.is_file():
        raise BackendError(f"no Jaeger binary at {binary}: {SETUP_HINT}")
    return binary


def otelcol_binary() -> Path:
    """The Collector of builder-config.yaml, built once into the cache (minutes the first time)."""
    result = run(["bash", str(OTELCOL_DIR / "build.sh")], timeout_s=1800)
    if result.returncode != 0:
        raise BackendError(
            f"collectors/otel-collector/build.sh failed ({result.returncode}):\n"
            f"{result.stderr[-3000:]}"
        )
    binary = Path(result.stdout.strip().splitlines()[-1])
    if not binary.is_file():
        raise BackendError(f"build.sh printed {binary}, which does not exist")
    return binary


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


class ConfiguredProcess:
    """A Collector or Jaeger process running one of the collectors/ configs on free ports.

    `env` overrides the config's variables (ports, endpoints, knobs); the OTEL_*, SENTRY_*
    and SPOTLIGHT_* variables of the test process are never passed on, so the process cannot
    send its own telemetry anywhere.
    """

    def __init__(
        self,
        name: str,
        binary: Path,
        config: Path,
        *,
        env: Mapping[str, str],
        health_url: str,
    ) -> None:
        self.name = name
        self.env = dict(env)
        self.health_url = health_url
        self._process = ManagedProcess(
            name, [str(binary), "--config", f"file:{config}"], env=scrubbed_env(self.env)
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines)

    def start(self, timeout_s: float = 30.0) -> float:
        """Starts the process and returns the seconds it took to report healthy."""
        started = time.monotonic()
        self._process.start()
        try:
            poll(self._healthy, timeout_s=timeout_s, interval_s=0.1, describe=self.log_tail)
        except BaseException:
            self._process.stop()
            raise
        return time.monotonic() - started

    def stop(self) -> None:
        self._process.stop()

    def _healthy(self) -> bool | None:
        self._process.check_alive()
        try:
            response = http_request("GET", self.health_url, timeout_s=1.0)
        except OSError:
            return None
        if response.status != 200:
            return None
        # Jaeger's healthcheckv2 answers JSON with "healthy"; the Collector's health_check
        # answers {"status": "Server available", ...}.
        body = response.json()
        return (
            True
            if body.get("healthy") is True or body.get("status") == "Server available"
            else None
        )


@contextmanager
def running(process: ConfiguredProcess, timeout_s: float = 30.0) -> Iterator[ConfiguredProcess]:
    process.start(timeout_s)
    try:
        yield process
    finally:
        process.stop()


def metrics_text(port: int) -> str:
    """The Prometheus text a process serves on 127.0.0.1:port/metrics."""
    response = http_request("GET", f"http://{LOOPBACK}:{port}/metrics", timeout_s=5.0)
    if response.status != 200:
        raise BackendError(f"metrics on port {port} answered {response.status}")
    return response.body.decode()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of one metric in Prometheus text, over series matching labels."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        selector, _, value = line.rpartition(" ")
        if all(f'{key}="{val}"' in selector for key, val in labels.items()):
            total += float(value)
    return total

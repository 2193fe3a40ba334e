"""A real Jaeger v2 for the integration tests, from the binary `setup.sh` builds.

Jaeger runs with `jaeger-test.yaml` beside this file: memory storage, every listener on
127.0.0.1 on ports chosen here, no tracing of its own queries, and none of the OTEL_* variables
of the test process (Jaeger would otherwise trace itself to wherever they point).

Example:
    jaeger = Jaeger.from_cache().start()
    ...export spans to jaeger.otlp_grpc_endpoint...
    trace = jaeger.wait_for_trace(trace_id, min_spans=3)
    jaeger.stop()
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tests.backends._support import (
    LOOPBACK,
    SETUP_HINT,
    BackendError,
    ManagedProcess,
    free_port,
    http_json,
    http_request,
    poll,
    scrubbed_env,
)

CONFIG_PATH = Path(__file__).with_name("jaeger-test.yaml")
GO_MOD_PATH = Path(__file__).with_name("jaeger_build") / "go.mod"

JaegerTrace = dict[str, Any]
JaegerSpan = dict[str, Any]


def pinned_version() -> str:
    """The Jaeger module version jaeger_build/go.mod pins (v1.75.0 is the tag of Jaeger v2.12)."""
    for line in GO_MOD_PATH.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "github.com/jaegertracing/jaeger":
            return words[1]
    raise BackendError(f"{GO_MOD_PATH} does not require github.com/jaegertracing/jaeger")


def cached_binary() -> Path:
    """Where jaeger_build/build.sh leaves the binary (honours AGENT_TRACE_CACHE, XDG_CACHE_HOME)."""
    cache_root = os.environ.get("AGENT_TRACE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agent-trace"
    )
    return Path(cache_root) / "jaeger" / pinned_version() / "jaeger"


@dataclass(frozen=True)
class JaegerPorts:
    """Every port the test Jaeger listens on, all on 127.0.0.1."""

    otlp_grpc: int
    otlp_http: int
    query_http: int
    query_grpc: int
    health: int
    metrics: int

    @classmethod
    def pick(cls) -> JaegerPorts:
        ports: set[int] = set()
        while len(ports) < len(fields(cls)):
            ports.add(free_port())
        return cls(*sorted(ports))

    def as_env(self) -> dict[str, str]:
        """The variables jaeger-test.yaml reads its ports from."""
        return {
            f"JAEGER_TEST_{f.name.upper()}_PORT": str(getattr(self, f.name)) for f in fields(self)
        }


class Jaeger:
    """One Jaeger v2 process with memory storage; its data is gone after stop()."""

    def __init__(
        self,
        binary: Path,
        *,
        ports: JaegerPorts | None = None,
        config_path: Path = CONFIG_PATH,
    ) -> None:
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise BackendError(f"no Jaeger binary at {binary}: {SETUP_HINT}")

        self.binary = binary
        self.ports = ports or JaegerPorts.pick()
        self.config_path = config_path
        self.startup_s: float | None = None
        self._process = ManagedProcess(
            "jaeger",
            [str(binary), "--config", f"file:{config_path}"],
            env=scrubbed_env(self.ports.as_env()),
        )

    @classmethod
    def from_cache(cls, **kwargs: Any) -> Jaeger:
        """A Jaeger using the binary built by setup.sh; BackendError when it is missing."""
        return cls(cached_binary(), **kwargs)

    # --- addresses -------------------------------------------------------------------------

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.otlp_grpc}"

    @property
    def otlp_http_endpoint(self) -> str:
        """Base URL of OTLP/HTTP; traces go to `/v1/traces` under it."""
        return f"http://{LOOPBACK}:{self.ports.otlp_http}"

    @property
    def otlp_http_traces_url(self) -> str:
        return f"{self.otlp_http_endpoint}/v1/traces"

    @property
    def query_url(self) -> str:
        """Base URL of the query API (and of the UI, which this build does not embed)."""
        return f"http://{LOOPBACK}:{self.ports.query_http}"

    @property
    def health_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.health}/status"

    @property
    def metrics_url(self) -> str:
        """Jaeger's own Prometheus metrics (receiver and storage counters)."""
        return f"http://{LOOPBACK}:{self.ports.metrics}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    @property
    def is_running(self) -> bool:
        return self._process.is_running

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> Jaeger:
        """Starts Jaeger and returns once its health check reports it ready."""
        started = time.monotonic()
        self._process.start()
        try:
            poll(self._ready, timeout_s=timeout_s, describe=self._process.log_tail)
        except BaseException:
            self._process.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._process.stop(timeout_s)

    def restart(self, timeout_s: float = 30.0) -> Jaeger:
        """Stops and starts Jaeger again on the same ports; the stored traces are lost."""
        self.stop()
        return self.start(timeout_s)

    def _ready(self) -> bool | None:
        self._process.check_alive()
        try:
            response = http_request("GET", self.health_url, timeout_s=1.0)
        except OSError:
            return None
        # healthcheckv2 answers 503 while components are still starting.
        if response.status == 200 and response.json().get("healthy") is True:
            return True
        return None

    # --- query API -------------------------------------------------------------------------

    def services(self) -> list[str]:
        """Service names Jaeger has seen spans from, sorted."""
        return sorted(http_json(f"{self.query_url}/api/services")["data"] or [])

    def find_traces(
        self,
        service: str,
        tags: Mapping[str, str | int | float | bool] | None = None,
        *,
        operation: str | None = None,
        limit: int = 100,
        lookback_s: float = 3600.0,
        raw: bool = False,
    ) -> list[JaegerTrace]:
        """Traces with a span of service matching every tag, as `/api/traces` returns them.

        Jaeger compares tag values as strings, and in memory storage one span must carry all
        the tags; `error=true` cannot be searched in this version. raw=True skips Jaeger's
        adjusters (clock skew, warnings about missing parents).
        """
        now_us = int(time.time() * 1e6)
        params: dict[str, str] = {
            "service": service,
            "limit": str(limit),
            "start": str(now_us - int(lookback_s * 1e6)),
            # A little ahead of now, for spans stamped by a clock slightly in the future.
            "end": str(now_us + 60_000_000),
        }
        if tags:
            params["tags"] = json.dumps({k: _tag_string(v) for k, v in tags.items()})
        if operation is not None:
            params["operation"] = operation
        if raw:
            params["raw"] = "true"
        url = f"{self.query_url}/api/traces?{urllib.parse.urlencode(params)}"
        return list(http_json(url)["data"] or [])

    def get_trace(self, trace_id: str, *, raw: bool = False) -> JaegerTrace | None:
        """One trace by its hex id, as `/api/traces/{id}` returns it; None when unknown."""
        suffix = "?raw=true" if raw else ""
        response = http_request("GET", f"{self.query_url}/api/traces/{trace_id}{suffix}")
        if response.status == 404:
            return None
        if response.status != 200:
            raise BackendError(f"get_trace({trace_id}) answered {response.status}")
        data = response.json()["data"] or []
        return data[0] if data else None

    def get_otlp_trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace from `/api/v3/traces/{id}`, OTLP-shaped: events, links, status kept."""
        response = http_request("GET", f"{self.query_url}/api/v3/traces/{trace_id}")
        if response.status == 404:
            return None
        if response.status != 200:
            raise BackendError(f"get_otlp_trace({trace_id}) answered {response.status}")
        result: dict[str, Any] = response.json()["result"]
        return result

    def wait_for_trace(
        self, trace_id: str, *, min_spans: int = 1, timeout_s: float = 10.0, raw: bool = False
    ) -> JaegerTrace:
        """Polls until the trace has at least min_spans spans; TimeoutError otherwise."""
        last: list[JaegerTrace | None] = [None]

        def probe() -> JaegerTrace | None:
            last[0] = trace = self.get_trace(trace_id, raw=raw)
            return trace if trace is not None and len(trace["spans"]) >= min_spans else None

        def describe() -> str:
            seen = len(last[0]["spans"]) if last[0] else 0
            return f"trace {trace_id} has {seen} of {min_spans} spans in Jaeger"

        return poll(probe, timeout_s=timeout_s, interval_s=0.1, describe=describe)

    def wait_for_spans(
        self,
        service: str,
        count: int,
        tags: Mapping[str, str | int | float | bool] | None = None,
        *,
        operation: str | None = None,
        timeout_s: float = 10.0,
    ) -> list[JaegerSpan]:
        """Polls until at least count spans of service (carrying every tag) are stored.

        Returns those spans, each with its process under the `process` key.
        """
        last: list[list[JaegerSpan]] = [[]]

        def probe() -> list[JaegerSpan] | None:
            traces = self.find_traces(service, tags, operation=operation, limit=1000)
            last[0] = spans = [
                span
                for span in iter_spans(traces)
                if span["process"]["serviceName"] == service
                and (operation is None or span["operationName"] == operation)
                and _has_tags(span, tags or {})
            ]
            return spans if len(spans) >= count else None

        def describe() -> str:
            return f"{len(last[0])} of {count} spans of {service!r} with tags {tags!r} in Jaeger"

        return poll(probe, timeout_s=timeout_s, interval_s=0.1, describe=describe)


def iter_spans(traces: list[JaegerTrace]) -> list[JaegerSpan]:
    """Every span of the traces, each a copy with its process under the `process` key."""
    spans = []
    for trace in traces:
        processes = trace.get("processes", {})
        for span in trace["spans"]:
            spans.append({**span, "process": processes.get(span.get("processID"), {})})
    return spans


def span_tags(span: JaegerSpan) -> dict[str, Any]:
    """A span's tags as a plain dict (Jaeger's JSON has a list of key/type/value)."""
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def process_tags(span: JaegerSpan) -> dict[str, Any]:
    """Tags of the span's process (the OTel resource attributes), for spans from iter_spans."""
    return {tag["key"]: tag["value"] for tag in span.get("process", {}).get("tags", [])}


def _tag_string(value: str | int | float | bool) -> str:
    # Jaeger compares tags as strings; booleans as Go prints them.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _has_tags(span: JaegerSpan, tags: Mapping[str, str | int | float | bool]) -> bool:
    available = {k: _tag_string(v) for k, v in {**process_tags(span), **span_tags(span)}.items()}
    return all(available.get(key) == _tag_string(value) for key, value in tags.items())

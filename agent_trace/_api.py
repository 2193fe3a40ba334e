"""configure(), force_flush(), shutdown() and the read-outs that go with them."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from agent_trace import _runtime
from agent_trace._config import Settings, resolve_settings
from agent_trace.alerts import AlertPolicy

__all__ = ["configure", "dropped_spans", "force_flush", "settings", "shutdown", "sink_status"]

_log = logging.getLogger("agent_trace")


def configure(
    service_name: str | None = None,
    *,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    otlp_headers: Mapping[str, str] | str | None = None,
    sentry_dsn: str | None = None,
    sentry_mode: str | None = None,
    sentry_environment: str | None = None,
    sentry_release: str | None = None,
    constitution_hash: str | None = None,
    local_path: str | os.PathLike[str] | None = None,
    local_file: bool | None = None,
    sample_rate: float | None = None,
    capture_content: bool | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
    schedule_delay_s: float | None = None,
    export_timeout_s: float | None = None,
    exit_timeout_s: float | None = None,
    prometheus_port: int | None = None,
    otlp_metrics: bool | None = None,
    export_process: bool | None = None,
    alert_policy: AlertPolicy | bool | None = None,
    _extra_sinks: Sequence[Any] = (),
    _metric_readers: Sequence[Any] = (),
    _env: Mapping[str, str] | None = None,
) -> Settings:
    """Build the tracing pipeline and install it; returns the validated settings.

    Every argument left as None is read from the environment (`OTEL_SERVICE_NAME`,
    `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`/`_PROTOCOL`/`_HEADERS`, `OTEL_TRACES_SAMPLER[_ARG]`,
    `OTEL_RESOURCE_ATTRIBUTES`, `SENTRY_DSN`, `SENTRY_ENVIRONMENT`, `SENTRY_RELEASE`,
    `CONSTITUTIONAL_HASH`, `AGENT_TRACE_*`). With neither an OTLP endpoint nor a DSN, spans go
    to `.agent-trace/traces.jsonl`. Calling it again replaces the previous pipeline (which is
    flushed and shut down first).

    The OTLP and Sentry sinks run in a process of their own (`export_process`, on by default;
    `AGENT_TRACE_EXPORT_PROCESS`): encoding spans for them then costs the application's
    threads no GIL time. `False` runs them on threads of this process.

    `alert_policy` sets the built-in alerting (see `agent_trace.AlertPolicy`); by default it is
    on, with its defaults, whenever a Sentry DSN is configured; `False` turns it off.

    Raises:
        ConfigurationError: (a `ValueError`) naming the setting, the bad value and the fix.

    Example:
        >>> import agent_trace
        >>> agent_trace.configure("coordinator", otlp_endpoint="http://127.0.0.1:4317")
    """
    settings = resolve_settings(
        service_name,
        env=_env,
        otlp_endpoint=otlp_endpoint,
        otlp_protocol=otlp_protocol,
        otlp_headers=otlp_headers,
        sentry_dsn=sentry_dsn,
        sentry_mode=sentry_mode,
        sentry_environment=sentry_environment,
        sentry_release=sentry_release,
        constitution_hash=constitution_hash,
        local_path=local_path,
        local_file=local_file,
        sample_rate=sample_rate,
        capture_content=capture_content,
        resource_attributes=resource_attributes,
        max_queue_size=max_queue_size,
        max_export_batch_size=max_export_batch_size,
        schedule_delay_s=schedule_delay_s,
        export_timeout_s=export_timeout_s,
        exit_timeout_s=exit_timeout_s,
        prometheus_port=prometheus_port,
        otlp_metrics=otlp_metrics,
        export_process=export_process,
    )
    # Every argument is checked before the previous pipeline is shut down: a bad one on a
    # reconfiguration must leave tracing as it was.
    _runtime.check_alert_policy(alert_policy)
    previous = _runtime.current()
    if previous is not None:
        _log.debug("agent-trace: reconfiguring; shutting the previous pipeline down")
        previous.shutdown(previous.settings.exit_timeout_s)
    pipeline = _runtime.Pipeline(
        settings,
        extra_sinks=_extra_sinks,
        metric_readers=_metric_readers,
        alert_policy=alert_policy,
    )
    _runtime.install(pipeline)
    _log.debug("agent-trace: configured %s with sinks %s", settings.service_name, settings.sinks)
    return settings


def force_flush(timeout_s: float = 5.0) -> bool:
    """Deliver every finished span; returns within `timeout_s` whether everything arrived.

    False also when spans were dropped since the previous flush (see `dropped_spans()`).

    A sink that hangs or refuses connections does not hold the call past its deadline.
    """
    pipeline = _runtime.current()
    if pipeline is None:
        return True
    return pipeline.force_flush(timeout_s)


def shutdown(timeout_s: float = 5.0) -> bool:
    """Flush and close every sink within `timeout_s`; returns whether everything arrived.

    Spans still queued at the deadline are counted in `dropped_spans()` as `shutdown_timeout`;
    spans that end afterwards are counted as `after_shutdown`.
    """
    pipeline = _runtime.current()
    if pipeline is None:
        return True
    ok = pipeline.shutdown(timeout_s)
    _runtime.uninstall(pipeline)
    return ok


def dropped_spans() -> dict[tuple[str, str], int]:
    """Spans that did not reach a sink, as `{(sink, reason): count}` since the process started."""
    return _runtime.drops().snapshot()


def sink_status() -> dict[str, str]:
    """Each active sink's state (`ok` or `failing: <last error>`); empty when not configured."""
    pipeline = _runtime.current()
    return {} if pipeline is None else pipeline.sink_status()


def settings() -> Settings | None:
    """The settings in force, or None before `configure()`."""
    pipeline = _runtime.current()
    return None if pipeline is None else pipeline.settings

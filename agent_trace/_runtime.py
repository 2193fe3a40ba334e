"""The process-wide state behind `configure()`, `force_flush()` and `shutdown()`.

One `Pipeline` is current at a time. The model reads `current()` on each call and does
nothing when it is None, which is what "imported but not configured" costs.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.metrics import Meter, NoOpMeter
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import TracerProvider

from agent_trace._config import Settings, wrong_type
from agent_trace._log import internal_error, rate_limit_sdk_warnings
from agent_trace._metrics import Metrics, build_meter_provider
from agent_trace._version import __version__
from agent_trace.alerts import AlertPolicy, SentryAlertSink
from agent_trace.pipeline.drops import DropCounter
from agent_trace.pipeline.processor import PipelineProcessor
from agent_trace.pipeline.propagation import AgentTracePropagator
from agent_trace.pipeline.provider import DelegatingTracerProvider, build_provider
from agent_trace.pipeline.scrub import Scrubber
from agent_trace.pipeline.sinks.build import remote_sinks, workers_for
from agent_trace.pipeline.worker import SpanSink

__all__ = ["Pipeline", "check_alert_policy", "current", "drops", "install", "tracer_provider"]

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_current: Pipeline | None = None
_drops = DropCounter()
_global_installed = False
_atexit_hooks: list[Callable[[], None]] = []


def drops() -> DropCounter:
    return _drops


def current() -> Pipeline | None:
    return _current


def check_alert_policy(policy: object) -> None:
    """Refuse an `alert_policy` argument that is neither an AlertPolicy, a boolean nor None."""
    if policy is not None and not isinstance(policy, (bool, AlertPolicy)):
        raise wrong_type(
            "alert_policy",
            policy,
            "an AlertPolicy, True or False",
            "pass agent_trace.AlertPolicy(...), True for the defaults, or False for no alerts",
        )


class Pipeline:
    """Everything one `configure()` built: provider, sinks, Sentry client, metrics."""

    def __init__(
        self,
        settings: Settings,
        *,
        extra_sinks: Sequence[SpanSink] = (),
        metric_readers: Sequence[MetricReader] = (),
        alert_policy: AlertPolicy | bool | None = None,
    ) -> None:
        # Before anything is built: a refused setting leaves no thread or file behind.
        check_alert_policy(alert_policy)
        self.settings = settings
        self.constitution_hash = settings.constitution_hash
        self.capture_content = settings.capture_content
        self.scrubber = Scrubber(capture_content=settings.capture_content)
        self.provider: TracerProvider = build_provider(
            settings.service_name, settings.sample_rate, settings.resource_attributes
        )
        self.tracer = self.provider.get_tracer("agent_trace", __version__)
        self.sentry: Any = None
        self.sinks: list[SpanSink] = []
        self._build_sinks(settings)

        synchronous = [s for s in extra_sinks if getattr(s, "synchronous", False)]
        queued = [s for s in (*self.sinks, *extra_sinks) if s not in synchronous]
        self.workers = workers_for(queued, settings, _drops)
        self.processor = PipelineProcessor(self.scrubber, self.workers, synchronous, _drops)
        self.provider.add_span_processor(self.processor)

        readers = list(metric_readers) + self._metric_readers(settings)
        self.meter_provider = build_meter_provider(self.provider.resource, readers)
        # Whether anything can read what is measured on `meter_provider` (see below).
        self.metrics_readable = bool(readers)
        # Readers cannot be added to an SDK meter provider later: with none, nothing can ever
        # read a measurement, so the instruments are the API's no-ops (5 us a span saved).
        meter: Meter = (
            self.meter_provider.get_meter("agent_trace", __version__)
            if readers
            else NoOpMeter("agent_trace", __version__)
        )
        self.metrics = Metrics(meter, _drops.snapshot)
        self.alerts = self._alert_policy(alert_policy)
        self.closed = False
        # Drops seen by the last flush: a flush reports False if spans were lost since then,
        # even when they were lost before it started (a full queue, a failed export).
        self._drops_seen = self._own_drops()

    def _alert_policy(self, policy: AlertPolicy | bool | None) -> AlertPolicy | None:
        """The built-in alerting: on by default when Sentry is configured."""
        if policy is False or (policy is None and self.sentry is None):
            return None
        if policy is None or policy is True:
            policy = AlertPolicy()
        if policy._sink is None:
            if self.sentry is None:
                return None
            policy.bind(SentryAlertSink(self.sentry.capture_event), self.constitution_hash)
        return policy

    def _build_sinks(self, settings: Settings) -> None:
        from agent_trace.pipeline.sinks.local_file import LocalFileSink

        if settings.sentry_dsn is not None:
            from agent_trace.pipeline.sentry_client import SentryClient

            # Error events (violations, alerts) go through sentry-sdk, in this process.
            self.sentry = SentryClient(settings, self.scrubber)
        if settings.export_process:
            from agent_trace.pipeline.offload.parent import ExportProcessSink

            names = [name for name in settings.sinks if name != "local_file"]
            self.sinks.append(ExportProcessSink(settings, _drops, self.provider.resource, names))
        else:
            self.sinks.extend(remote_sinks(settings, _drops))
        if settings.local_path is not None:
            self.sinks.append(LocalFileSink(settings.local_path))

    def _metric_readers(self, settings: Settings) -> list[MetricReader]:
        readers: list[MetricReader] = []
        if settings.otlp_metrics and settings.otlp_endpoint:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            if settings.otlp_protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter as GrpcMetricExporter,
                )

                exporter: Any = GrpcMetricExporter(
                    endpoint=settings.otlp_endpoint,
                    insecure=settings.otlp_endpoint.startswith("http://"),
                    headers=dict(settings.otlp_headers),
                    timeout=settings.export_timeout_s,
                )
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter as HttpMetricExporter,
                )

                endpoint = settings.otlp_endpoint
                if endpoint.endswith("/v1/traces"):
                    endpoint = endpoint[: -len("/v1/traces")] + "/v1/metrics"
                exporter = HttpMetricExporter(
                    endpoint=endpoint,
                    headers=dict(settings.otlp_headers),
                    timeout=settings.export_timeout_s,
                )
            readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=15000))
        if settings.prometheus_port is not None:
            from agent_trace.integrations.prometheus import start_prometheus_reader

            readers.append(
                start_prometheus_reader(settings.prometheus_host, settings.prometheus_port)
            )
        return readers

    def sink_status(self) -> dict[str, str]:
        """Each sink's state: `ok`, `queued N`, or the last error, for health checks."""
        status = {}
        for worker in self.workers:
            statuses = getattr(worker.sink, "statuses", None)
            if statuses is not None:
                for name, error in statuses().items():
                    status[name] = f"failing: {error}" if error else "ok"
                continue
            if worker.last_error:
                status[worker.sink.name] = f"failing: {worker.last_error}"
            else:
                status[worker.sink.name] = "ok"
        return status

    def _own_drops(self) -> int:
        names = {n for w in self.workers for n in getattr(w.sink, "drop_names", (w.sink.name,))}
        return sum(n for (sink, _), n in _drops.snapshot().items() if sink in names)

    def force_flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        if self.alerts is not None:
            self.alerts.flush()
        ok = self.processor.force_flush(int(timeout_s * 1000))
        drops = self._own_drops()
        ok = ok and drops == self._drops_seen
        self._drops_seen = drops
        remaining = deadline - time.monotonic()
        if self.sentry is not None and remaining > 0:
            # Error events (violations, alerts) wait in sentry-sdk's own queue: they get the
            # time left, on a daemon thread, so that the caller's deadline holds.
            sentry = self.sentry
            _run_with_deadline(lambda: sentry.flush(remaining), remaining)
            remaining = deadline - time.monotonic()
        if remaining > 0:
            # The metric exporters keep their own (longer) timeouts: wait for them on a daemon
            # thread, so that the caller's deadline holds.
            _run_with_deadline(
                lambda: self.meter_provider.force_flush(int(remaining * 1000)), remaining
            )
        return ok

    def shutdown(self, timeout_s: float) -> bool:
        if self.closed:
            return True
        self.closed = True
        deadline = time.monotonic() + timeout_s
        if self.alerts is not None:
            self.alerts.flush()
        ok = self.processor.shutdown_within(timeout_s)
        if self.sentry is not None:
            # Error events (violations, alerts) go through sentry-sdk's own queue.
            try:
                self.sentry.close(max(0.0, deadline - time.monotonic()))
            except Exception:
                internal_error(_log, "sentry close")
        _run_with_deadline(self.meter_provider.shutdown, max(0.0, deadline - time.monotonic()))
        return ok


def _run_with_deadline(fn: Callable[[], Any], timeout_s: float) -> None:
    def guarded() -> None:
        try:
            fn()
        except Exception:
            internal_error(_log, "metrics flush or shutdown")

    thread = threading.Thread(target=guarded, name="agent-trace-deadline", daemon=True)
    try:
        thread.start()
    except RuntimeError:
        # No new thread at interpreter exit (Python 3.12+ refuses them in atexit handlers):
        # run it here, without the deadline, rather than not at all.
        guarded()
        return
    thread.join(timeout_s)


def install(pipeline: Pipeline) -> Pipeline | None:
    """Make `pipeline` current; returns the one it replaces (still open)."""
    global _current, _global_installed
    with _lock:
        previous = _current
        _current = pipeline
        if not _global_installed:
            _install_globals()
            _global_installed = True
        propagate.set_global_textmap(AgentTracePropagator(_dsc(pipeline.settings)))
    return previous


def uninstall(pipeline: Pipeline) -> None:
    global _current
    with _lock:
        if _current is pipeline:
            _current = None


def _dsc(settings: Settings) -> dict[str, str]:
    dsc: dict[str, str] = {}
    if settings.sentry_dsn is not None:
        dsc["sentry-public_key"] = settings.sentry_dsn.public_key
    if settings.sentry_environment:
        dsc["sentry-environment"] = settings.sentry_environment
    if settings.sentry_release:
        dsc["sentry-release"] = settings.sentry_release
    return dsc


def _current_provider() -> TracerProvider | None:
    pipeline = _current
    return pipeline.provider if pipeline is not None else None


# Always forwards to the current configuration's provider (no-op tracers while there is none).
_delegate = DelegatingTracerProvider(_current_provider)


def tracer_provider() -> trace.TracerProvider:
    """The provider for instrumentation agent-trace sets up itself (FastAPI's, say).

    Given to it explicitly: the global provider may be one the host program installed first.
    """
    return _delegate


def _install_globals() -> None:
    # Our provider must be the global one before anything else (sentry-sdk included) looks.
    trace.set_tracer_provider(_delegate)
    if trace.get_tracer_provider() is not _delegate:
        _log.warning(
            "agent-trace: another OpenTelemetry tracer provider was installed first; spans from "
            "other instrumentation go there, agent-trace's own spans still go to its sinks"
        )
    atexit.register(_at_exit)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    rate_limit_sdk_warnings()


class _ForkAnchor:
    """A long-lived object for multiprocessing's weak after-fork registry to hold on to."""


_fork_anchor = _ForkAnchor()


def _after_fork_in_child() -> None:
    global _lock
    # A lock another thread of the parent held at the fork stays held in the child forever:
    # counting a drop (frequent during an outage) or configuring there would deadlock.
    _lock = threading.Lock()
    _drops.after_fork_in_child()
    # multiprocessing ends a forked worker with os._exit(), which skips atexit: the spans the
    # worker finished would be lost. Its own exit finalizers do run, but it clears them right
    # after the fork, so register one from its after-fork hook, which runs after that reset.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_fork_anchor, _flush_at_worker_exit)


def _flush_at_worker_exit(anchor: _ForkAnchor) -> None:
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.Finalize(anchor, _at_exit, exitpriority=100)


def add_exit_hook(hook: Callable[[], None]) -> None:
    """Run `hook` at interpreter exit before the final flush (the model ends open sessions)."""
    _atexit_hooks.append(hook)


def _at_exit() -> None:
    pipeline = _current
    if pipeline is None or pipeline.closed:
        return
    for hook in _atexit_hooks:
        try:
            hook()
        except Exception:
            internal_error(_log, "exit hook")
    try:
        pipeline.shutdown(pipeline.settings.exit_timeout_s)
    except Exception:
        internal_error(_log, "shutdown at exit")

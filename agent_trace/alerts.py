"""An alert policy for teams without Prometheus: few, meaningful Sentry events.

- A constitutional violation recorded as data (`check.violation(...)`) becomes a Sentry event
  fingerprinted by violation type, so Sentry shows one issue per type; within
  `violation_cooldown_s` further violations of the same type are counted and reported with
  the next event instead of each sending one. (A raised `ConstitutionalViolationError` always
  sends its own error event, fingerprinted the same way.)
- The compliance rate over a sliding window of `window_s` seconds: compliant checks over all
  checks, as the Prometheus rule `ComplianceRateLow` counts them. A violation counts against
  it, and so does a check that gave no verdict (result `error`: an exception escaped it, or
  its returned verdict could not be read), since a check that did not run is no evidence of
  compliance. When the rate falls under `compliance_threshold` (with at least `min_checks`
  checks in the window) one alert is sent; when it is back at or above the threshold, one
  recovery. Nothing in between.
- Missed performance targets are aggregated per target: at most one event per target every
  `breach_interval_s`, carrying the count and the worst value since the last one.

Every event links the trace (trace id and span id of the span that triggered it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

__all__ = ["AlertPolicy", "AlertSink", "SentryAlertSink"]


class AlertSink(Protocol):
    """Receives alert events (Sentry event dictionaries). Called on the application's thread."""

    def send(self, event: dict[str, Any]) -> None: ...


class SentryAlertSink:
    """Sends alert events through sentry-sdk (its transport does the I/O off-thread).

    `capture` is the function that sends one event; `configure()` passes agent-trace's own
    Sentry client's, so alerts go to agent-trace's DSN even when the application initialises
    sentry-sdk for itself later. Without it, events go to sentry-sdk's current client.
    """

    def __init__(self, capture: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._capture = capture

    def send(self, event: dict[str, Any]) -> None:
        if self._capture is not None:
            self._capture(event)
            return
        import sentry_sdk

        # sentry-sdk types events as a TypedDict; ours is built to that shape.
        sentry_sdk.capture_event(cast(Any, event))


@dataclass
class _Breaches:
    count: int = 0
    worst: float = 0.0
    threshold: float = 0.0
    unit: str = ""
    last_sent: float | None = None
    trace: dict[str, str] | None = None


@dataclass
class AlertPolicy:
    """Thresholds and windows of the built-in alerting. Pass to `configure(alert_policy=...)`."""

    compliance_threshold: float = 0.97
    window_s: float = 300.0
    min_checks: int = 20
    violation_cooldown_s: float = 60.0
    breach_interval_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    constitution_hash: str = "unset"
    _sink: AlertSink | None = field(default=None, repr=False)
    _checks: deque[tuple[float, bool]] = field(default_factory=deque, repr=False)
    _alerting: bool = field(default=False, repr=False)
    _violations: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)
    _breaches: dict[str, _Breaches] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.compliance_threshold <= 1.0:
            raise ValueError(
                f"compliance_threshold={self.compliance_threshold!r}: must be a share between "
                "0 and 1. Fix: 0.97 means alert under 97 %"
            )
        for name in ("window_s", "violation_cooldown_s", "breach_interval_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must not be negative. Fix: 60")

    def bind(self, sink: AlertSink, constitution_hash: str | None) -> AlertPolicy:
        """Attach the sink events go to (done by `configure`)."""
        self._sink = sink
        self.constitution_hash = constitution_hash or "unset"
        return self

    @property
    def alerting(self) -> bool:
        """Whether the compliance-rate alert is currently raised."""
        return self._alerting

    # -- inputs -------------------------------------------------------------------------------

    def violation(self, violation_type: str, severity: str, trace: dict[str, str] | None) -> None:
        now = self.clock()
        with self._lock:
            last, suppressed = self._violations.get(violation_type, (None, 0))
            if last is not None and now - last < self.violation_cooldown_s:
                self._violations[violation_type] = (last, suppressed + 1)
                return
            self._violations[violation_type] = (now, 0)
        message = f"Constitutional violation: {violation_type} ({severity})"
        if suppressed:
            message += f"; {suppressed} more of this type since the last report"
        self._send(
            message,
            level="error",
            fingerprint=["agent_trace.constitutional_violation", violation_type],
            tags={"violation_type": violation_type, "severity": severity},
            extra={"suppressed_since_last": suppressed},
            trace=trace,
        )

    def compliance(self, compliant: bool, trace: dict[str, str] | None) -> None:
        """One finished check: `compliant` is False for a violation and for a check in error."""
        now = self.clock()
        with self._lock:
            self._checks.append((now, compliant))
            while self._checks and now - self._checks[0][0] > self.window_s:
                self._checks.popleft()
            total = len(self._checks)
            passed = sum(1 for _, ok in self._checks if ok)
            rate = passed / total if total else 1.0
            change: str | None = None
            if not self._alerting and total >= self.min_checks and rate < self.compliance_threshold:
                self._alerting, change = True, "alert"
            elif self._alerting and rate >= self.compliance_threshold:
                self._alerting, change = False, "recovery"
        if change is None:
            return
        percent = f"{rate * 100:.1f} %"
        limit = f"{self.compliance_threshold * 100:.1f} %"
        if change == "alert":
            message = (
                f"Compliance rate {percent} is under {limit} ({total} checks, {self.window_s:g} s)"
            )
            level = "warning"
        else:
            message = f"Compliance rate recovered: {percent} (threshold {limit})"
            level = "info"
        self._send(
            message,
            level=level,
            fingerprint=["agent_trace.compliance_rate", change],
            tags={"alert": f"compliance_rate_{change}"},
            extra={"compliance_rate": rate, "checks_in_window": total},
            trace=trace,
        )

    def target(
        self,
        name: str,
        met: bool,
        actual: float,
        threshold: float,
        unit: str,
        trace: dict[str, str] | None,
    ) -> None:
        if met:
            return
        now = self.clock()
        with self._lock:
            state = self._breaches.setdefault(name, _Breaches())
            state.count += 1
            state.worst = max(state.worst, actual)
            state.threshold, state.unit, state.trace = threshold, unit, trace
            if state.last_sent is not None and now - state.last_sent < self.breach_interval_s:
                return
            report = (state.count, state.worst)
            state.count, state.worst, state.last_sent = 0, 0.0, now
        self._send_breaches(name, report[0], report[1], threshold, unit, trace)

    def flush(self) -> None:
        """Send the aggregates still pending (called by `force_flush` and `shutdown`)."""
        with self._lock:
            pending = [
                (n, s.count, s.worst, s.threshold, s.unit, s.trace)
                for n, s in self._breaches.items()
                if s.count
            ]
            for _, state in self._breaches.items():
                state.count, state.worst = 0, 0.0
        for name, count, worst, threshold, unit, trace in pending:
            self._send_breaches(name, count, worst, threshold, unit, trace)

    # -- output -------------------------------------------------------------------------------

    def _send_breaches(
        self,
        name: str,
        count: int,
        worst: float,
        threshold: float,
        unit: str,
        trace: dict[str, str] | None,
    ) -> None:
        self._send(
            f"Performance target {name} missed {count} time(s); worst {worst:g} {unit} "
            f"(target {threshold:g} {unit})",
            level="warning",
            fingerprint=["agent_trace.target_breach", name],
            tags={"target": name},
            extra={"breaches": count, "worst": worst, "threshold": threshold, "unit": unit},
            trace=trace,
        )

    def _send(
        self,
        message: str,
        *,
        level: str,
        fingerprint: list[str],
        tags: dict[str, str],
        extra: dict[str, Any],
        trace: dict[str, str] | None,
    ) -> None:
        if self._sink is None:
            return
        event: dict[str, Any] = {
            "message": message,
            "level": level,
            "fingerprint": fingerprint,
            "tags": {"constitutional_hash": self.constitution_hash, **tags},
            "extra": extra,
            "logger": "agent_trace.alerts",
        }
        if trace:
            event["contexts"] = {"trace": dict(trace)}
        self._sink.send(event)

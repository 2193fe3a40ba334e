"""Performance targets judged on the span they concern."""

from __future__ import annotations

import logging
import math

from opentelemetry import trace

from agent_trace import _attributes as A
from agent_trace import _runtime
from agent_trace._log import internal_error

__all__ = ["monitor_performance_target"]

_log = logging.getLogger(__name__)


def monitor_performance_target(
    target_name: str, target_value: float, actual_value: float, unit: str = "ms"
) -> bool:
    """Judge `actual_value` against `target_value` (lower is better) on the current span.

    Sets `agent_trace.target.{name,threshold,actual,unit,met}` on the current span and counts
    a breach in `agent_trace.target.breaches`. A breach is data, never an error status.
    Returns whether the target was met (computed even when tracing is off).

    Example:
        >>> agent_trace.monitor_performance_target("round_compute", 5.0, 3.2, unit="ms")
        True
    """
    try:
        met = bool(math.isfinite(actual_value) and actual_value <= target_value)
    except (TypeError, ValueError, OverflowError):
        return False
    try:
        pipeline = _runtime.current()
        if pipeline is None:
            return met
        span = trace.get_current_span()
        if not met:
            # Counted whether or not the trace is sampled: alerts judge every breach.
            pipeline.metrics.target_breaches.add(1, {"target": target_name})
            if pipeline.alerts is not None:
                ctx = span.get_span_context()
                pipeline.alerts.target(
                    target_name,
                    met,
                    float(actual_value),
                    float(target_value),
                    unit,
                    {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"},
                )
        if not span.is_recording():
            return met
        p = A.TARGET
        attrs = {
            p + "name": target_name,
            p + "threshold": float(target_value),
            p + "actual": float(actual_value),
            p + "unit": unit,
            p + "met": met,
        }
        if not met:
            attrs[p + "breached"] = True
        span.set_attributes(A.to_attributes(attrs))
    except Exception:
        internal_error(_log, "judging a performance target")
    return met

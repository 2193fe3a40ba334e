"""The metrics agent-trace emits, on a meter provider owned by the current configuration.

Attributes are low-cardinality by construction: agent names, policies, outcomes, never a
session id or free text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

__all__ = ["DURATION_BUCKETS_S", "Metrics", "build_meter_provider"]

DURATION_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def build_meter_provider(resource: Resource, readers: Sequence[MetricReader]) -> MeterProvider:
    view = View(
        instrument_name="agent_trace.*duration",
        aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS_S),
    )
    return MeterProvider(
        metric_readers=list(readers), resource=resource, views=[view], shutdown_on_exit=False
    )


class Metrics:
    """The instruments, created once per configuration."""

    def __init__(self, meter: Meter, dropped: Callable[[], dict[tuple[str, str], int]]) -> None:
        # False on the API's no-op meter (no reader can ever see a measurement): the model
        # then skips building the labels of measurements nothing records.
        self.recording = not isinstance(meter, NoOpMeter)
        self.compliance_checks = meter.create_counter(
            "agent_trace.compliance.checks",
            unit="{check}",
            description="Constitutional checks by result",
        )
        self.violations = meter.create_counter(
            "agent_trace.violations", unit="{violation}", description="Constitutional violations"
        )
        self.rounds = meter.create_counter(
            "agent_trace.consensus.rounds",
            unit="{round}",
            description="Consensus rounds by outcome",
        )
        self.round_duration = meter.create_histogram(
            "agent_trace.consensus.round.duration", unit="s", description="Consensus round duration"
        )
        self.turn_duration = meter.create_histogram(
            "agent_trace.turn.duration", unit="s", description="Agent turn duration"
        )
        self.sessions = meter.create_counter(
            "agent_trace.sessions", unit="{session}", description="Coordination sessions by outcome"
        )
        self.session_duration = meter.create_histogram(
            "agent_trace.session.duration", unit="s", description="Coordination session duration"
        )
        self.target_breaches = meter.create_counter(
            "agent_trace.target.breaches", unit="{breach}", description="Missed performance targets"
        )

        def observe_drops(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(count, {"sink": sink, "reason": reason})
                for (sink, reason), count in dropped().items()
            ]

        meter.create_observable_counter(
            "agent_trace.spans.dropped",
            callbacks=[observe_drops],
            unit="{span}",
            description="Spans that did not reach a sink, by sink and reason",
        )

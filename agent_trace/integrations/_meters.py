"""A meter provider for instrumentation libraries that measures into agent-trace's own metrics.

OpenTelemetry's instrumentations (FastAPI's HTTP server metrics, say) take their meter when an
app is instrumented, from the global meter provider unless given one. agent-trace never installs
a global meter provider (that is the host program's to choose): without this, their
measurements are no-ops, or land in whatever provider the host installs later. The provider
here hands out instruments that look up the current configuration on each measurement, so an
app instrumented before `configure()`, or across a reconfiguration, measures into the meter
provider and readers (Prometheus, OTLP) of the configuration in force at the time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry.context import Context
from opentelemetry.metrics import (
    CallbackT,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    NoOpMeter,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.util.types import Attributes

from agent_trace import _runtime

__all__ = ["PipelineMeterProvider"]

T = TypeVar("T")

_Scope = tuple[str, str | None, str | None]


class PipelineMeterProvider(MeterProvider):
    """Meters whose instruments measure into the current configuration's meter provider.

    Without a configuration, or with one that has no metric reader, measurements cost one
    lookup and go nowhere. Safe to call from any thread.
    """

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> Meter:
        return _PipelineMeter(name, version, schema_url)


def _meter_of(pipeline: _runtime.Pipeline, scope: _Scope) -> Meter:
    if not pipeline.metrics_readable:
        return NoOpMeter(*scope)
    return pipeline.meter_provider.get_meter(*scope)


class _Forwarder(Generic[T]):
    """The current configuration's instrument of one kind and name, made on first use."""

    def __init__(self, scope: _Scope, make: Callable[[Meter], T]) -> None:
        self._scope = scope
        self._make = make
        self._cached: tuple[_runtime.Pipeline, T] | None = None

    def target(self) -> T | None:
        pipeline = _runtime.current()
        if pipeline is None:
            return None
        cached = self._cached
        if cached is None or cached[0] is not pipeline:
            # Two threads may both make it: the SDK returns the same instrument for the same
            # name, so the race costs a lookup, never a measurement.
            cached = (pipeline, self._make(_meter_of(pipeline, self._scope)))
            self._cached = cached
        return cached[1]


class _PipelineCounter(Counter):
    def __init__(self, scope: _Scope, name: str, unit: str = "", description: str = "") -> None:
        self._to = _Forwarder(scope, lambda m: m.create_counter(name, unit, description))

    def add(
        self, amount: int | float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        target = self._to.target()
        if target is not None:
            target.add(amount, attributes, context)


class _PipelineUpDownCounter(UpDownCounter):
    # Across a reconfiguration, a request counted up in the old configuration is counted down
    # in the new one: the new one's active-requests value can dip below zero for a moment.
    def __init__(self, scope: _Scope, name: str, unit: str = "", description: str = "") -> None:
        self._to = _Forwarder(scope, lambda m: m.create_up_down_counter(name, unit, description))

    def add(
        self, amount: int | float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        target = self._to.target()
        if target is not None:
            target.add(amount, attributes, context)


class _PipelineHistogram(Histogram):
    def __init__(
        self,
        scope: _Scope,
        name: str,
        unit: str = "",
        description: str = "",
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> None:
        self._to = _Forwarder(
            scope,
            lambda m: m.create_histogram(
                name,
                unit,
                description,
                explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory,
            ),
        )

    def record(
        self, amount: int | float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        target = self._to.target()
        if target is not None:
            target.record(amount, attributes, context)


class _PipelineMeter(Meter):
    """Synchronous instruments that forward; observable ones join the current configuration."""

    def __init__(self, name: str, version: str | None, schema_url: str | None) -> None:
        super().__init__(name, version, schema_url)
        self._scope: _Scope = (name, version, schema_url)

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        return _PipelineCounter(self._scope, name, unit, description)

    def create_up_down_counter(
        self, name: str, unit: str = "", description: str = ""
    ) -> UpDownCounter:
        return _PipelineUpDownCounter(self._scope, name, unit, description)

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> Histogram:
        return _PipelineHistogram(
            self._scope, name, unit, description, explicit_bucket_boundaries_advisory
        )

    # TODO: an observable instrument is registered with the configuration in force when it is
    # created (none: a no-op) and stays there; after a reconfiguration its callbacks are no
    # longer read. The HTTP instrumentations agent-trace wraps create none.
    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableCounter:
        return self._current().create_observable_counter(name, callbacks, unit, description)

    def create_observable_gauge(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableGauge:
        return self._current().create_observable_gauge(name, callbacks, unit, description)

    def create_observable_up_down_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableUpDownCounter:
        return self._current().create_observable_up_down_counter(name, callbacks, unit, description)

    def _current(self) -> Meter:
        pipeline = _runtime.current()
        if pipeline is None:
            return NoOpMeter(*self._scope)
        return _meter_of(pipeline, self._scope)

"""The tracer provider the OpenTelemetry API hands out, and the SDK provider behind it.

The global provider can be set only once per process, yet `configure()` may run again (tests,
a reconfigured service). The global one is therefore a thin delegate that asks the current
pipeline for a tracer on each call; agent-trace's own model holds the SDK tracer directly.
"""

from __future__ import annotations

import os
import random
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from agent_trace._attributes import MAX_VALUE_LENGTH
from agent_trace._version import __version__

__all__ = ["SPAN_LIMITS", "DelegatingTracerProvider", "ParentOrRootSampler", "build_provider"]

# Limits for every span: a consensus round over hundreds of agents keeps its first 128
# attributes/links/events and counts the rest as dropped instead of growing without bound.
SPAN_LIMITS = SpanLimits(
    max_attributes=128,
    max_events=128,
    max_links=128,
    max_event_attributes=32,
    max_link_attributes=32,
    max_attribute_length=MAX_VALUE_LENGTH + 64,
)


class PrivateRandomIdGenerator(IdGenerator):
    """Trace and span ids from a random generator of our own, seeded by the operating system.

    The SDK's default draws from the `random` module, whose state the host program owns: an
    agent simulation that calls `random.seed(0)` for reproducible runs would give every run
    the same trace ids, and the backends would merge unrelated traces. A private generator is
    immune to that and, unlike `SystemRandom`, costs no system call per id; a forked child
    reseeds it, or parent and child would draw the same ids.
    """

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))
        self_ref = weakref.ref(self)

        def reseed() -> None:
            generator = self_ref()
            if generator is not None:
                generator._random.seed(os.urandom(32))

        os.register_at_fork(after_in_child=reseed)

    def generate_span_id(self) -> int:
        while True:
            span_id = self._random.getrandbits(64)
            if span_id:
                return span_id

    def generate_trace_id(self) -> int:
        while True:
            trace_id = self._random.getrandbits(128)
            if trace_id:
                return trace_id


def build_provider(
    service_name: str, sample_rate: float, resource_attributes: Mapping[str, str]
) -> TracerProvider:
    attrs: dict[str, Any] = dict(resource_attributes)
    attrs["service.name"] = service_name
    attrs.setdefault("telemetry.distro.name", "agent-trace")
    attrs.setdefault("telemetry.distro.version", __version__)
    return TracerProvider(
        sampler=ParentOrRootSampler(_root_sampler(sample_rate)),
        resource=Resource.create(attrs),
        span_limits=SPAN_LIMITS,
        id_generator=PrivateRandomIdGenerator(),
        shutdown_on_exit=False,
    )


def _root_sampler(sample_rate: float) -> Sampler:
    # The same decisions as `TraceIdRatioBased` at 0 and 1, in a third of its time (1-2 us a
    # root span): the common settings need no look at the trace id.
    if sample_rate >= 1.0:
        return ALWAYS_ON
    if sample_rate <= 0.0:
        return ALWAYS_OFF
    return TraceIdRatioBased(sample_rate)


class ParentOrRootSampler(Sampler):
    """The SDK's `ParentBased(root)` with its default delegates, in one step.

    A span with a valid parent (local or remote) is sampled exactly when its parent is, and
    keeps the parent's trace state; a root span asks `root`. `ParentBased` reaches the same
    decisions through a second sampler call that looks up the parent span again: one call and
    one lookup fewer for every span that has a parent.
    """

    def __init__(self, root: Sampler) -> None:
        self._root = root

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent is not None and parent.is_valid:
            if parent.trace_flags.sampled:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state)
            return SamplingResult(Decision.DROP, None, parent.trace_state)
        return self._root.should_sample(parent_context, trace_id, name, kind, attributes, links)

    def get_description(self) -> str:
        root = self._root.get_description()
        return (
            f"ParentBased{{root:{root},remoteParentSampled:AlwaysOnSampler,"
            "remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,"
            "localParentNotSampled:AlwaysOffSampler}"
        )


class DelegatingTracerProvider(trace.TracerProvider):
    """Installed once as the global provider; forwards to whatever `current()` returns."""

    def __init__(self, current: Callable[[], TracerProvider | None]) -> None:
        self._current = current

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> trace.Tracer:
        return _DelegatingTracer(
            self._current, instrumenting_module_name, instrumenting_library_version, schema_url
        )


class _DelegatingTracer(trace.Tracer):
    def __init__(
        self,
        current: Callable[[], TracerProvider | None],
        name: str,
        version: str | None,
        schema_url: str | None,
    ) -> None:
        self._current = current
        self._args = (name, version, schema_url)
        self._cached: tuple[TracerProvider, trace.Tracer] | None = None

    def _tracer(self) -> trace.Tracer:
        provider = self._current()
        if provider is None:
            return trace.NoOpTracer()
        cached = self._cached
        if cached is None or cached[0] is not provider:
            cached = (provider, provider.get_tracer(*self._args))
            self._cached = cached
        return cached[1]

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        return self._tracer().start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Any:
        return self._tracer().start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        )

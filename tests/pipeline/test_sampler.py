"""The provider's sampler decides as the SDK's ParentBased sampler does, for every parent."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from agent_trace.pipeline.provider import ParentOrRootSampler

ROOTS = [ALWAYS_ON, ALWAYS_OFF, TraceIdRatioBased(0.5)]


def _parent(*, remote: bool, sampled: bool) -> trace.Span:
    return NonRecordingSpan(
        SpanContext(
            trace_id=0x1234,
            span_id=0x99,
            is_remote=remote,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
            trace_state=TraceState([("vendor", "x")]),
        )
    )


@pytest.mark.parametrize("root", ROOTS, ids=lambda s: s.get_description())
@pytest.mark.parametrize("remote", [False, True])
@pytest.mark.parametrize("sampled", [False, True])
def test_a_span_with_a_parent_follows_it_as_parent_based_does(
    root: Sampler, remote: bool, sampled: bool
) -> None:
    context = trace.set_span_in_context(_parent(remote=remote, sampled=sampled))
    attributes = {"gen_ai.agent.name": "ethics"}

    ours = ParentOrRootSampler(root).should_sample(context, 0x1234, "turn", None, attributes)
    sdk = ParentBased(root).should_sample(context, 0x1234, "turn", None, attributes)

    assert ours.decision is sdk.decision
    assert dict(ours.attributes) == dict(sdk.attributes)
    assert ours.trace_state == sdk.trace_state == TraceState([("vendor", "x")])


@pytest.mark.parametrize("root", ROOTS, ids=lambda s: s.get_description())
def test_a_root_span_asks_the_root_sampler(root: Sampler) -> None:
    for trace_id in (1, 2**127, 2**128 - 1, 0x0123456789ABCDEF0123456789ABCDEF):
        ours = ParentOrRootSampler(root).should_sample(None, trace_id, "session", None, {"k": 1})
        sdk = ParentBased(root).should_sample(None, trace_id, "session", None, {"k": 1})

        assert ours.decision is sdk.decision
        assert dict(ours.attributes) == dict(sdk.attributes)
        assert ours.trace_state == sdk.trace_state


def test_its_description_is_the_one_parent_based_gives() -> None:
    for root in ROOTS:
        assert ParentOrRootSampler(root).get_description() == ParentBased(root).get_description()

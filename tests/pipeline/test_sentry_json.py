"""The JSON of Sentry transactions: orjson's fast way and the careful way send the same.

The sink encodes a transaction with orjson when every value is one it writes as Sentry should
get it, and otherwise (or without orjson) span by span with the standard library's encoder.
These tests hold the two to the same output, on real SDK spans, for values of every kind.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from agent_trace._config import SentryDsn
from agent_trace.pipeline.drops import DropCounter
from agent_trace.pipeline.sinks import sentry_json
from agent_trace.pipeline.sinks._http import HttpAnswer
from agent_trace.pipeline.sinks.sentry_envelope import SentryEnvelopeSink

RESOURCE = {"service.name": "json"}


def finished(attributes: dict[str, Any], *, children: int = 2) -> list[ReadableSpan]:
    """A root and `children` children, every span with `attributes` set through the SDK."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("json")
    with tracer.start_as_current_span("session", attributes=attributes):
        for index in range(children):
            with tracer.start_as_current_span(f"turn {index}", attributes=attributes):
                pass
    return list(exporter.get_finished_spans())


def careful(head: dict[str, Any], spans: list[dict[str, Any]]) -> bytes:
    for fields in [head, *spans]:
        sentry_json.make_safe(fields)
    return sentry_json.encode_safe_event(event(head, spans))


def event(head: dict[str, Any], spans: list[dict[str, Any]]) -> dict[str, Any]:
    return sentry_json.transaction_event(
        head, spans, event_id="0" * 32, resource=RESOURCE, environment="prod", release=None
    )


def both_ways(spans: list[ReadableSpan]) -> tuple[bytes | None, bytes]:
    """The transaction of `spans` (root last) the fast way (None: refused) and the careful way."""
    fast_fields = [sentry_json.span_fields(span)[0] for span in spans]
    careful_fields = [sentry_json.span_fields(span)[0] for span in spans]
    fast = sentry_json.encode_event(event(fast_fields[-1], fast_fields[:-1]))
    return fast, careful(careful_fields[-1], careful_fields[:-1])


def test_agent_trace_spans_go_the_fast_way_and_read_the_same_as_the_careful_way() -> None:
    attributes = {
        "agent_trace.constitution.hash": "cdd01ef066bc6cf2",
        "gen_ai.agent.name": "ethics",
        "agent_trace.consensus.threshold": 0.66,
        "agent_trace.turn.index": 3,
        "agent_trace.cancelled": False,
        "agent_trace.session.agents": ("ethics", "legal", "ops"),
        "weights": (2.0, 1.0, 0.5),
    }
    fast, slow = both_ways(finished(attributes))

    assert fast is not None
    assert json.loads(fast) == json.loads(slow)
    sent = json.loads(fast)
    assert sent["tags"]["constitutional_hash"] == "cdd01ef066bc6cf2"
    assert sent["spans"][0]["data"]["agent_trace.session.agents"] == ["ethics", "legal", "ops"]


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        ((1.0, -math.inf), [1.0, "-Infinity"]),
        ("lone \ud800", "lone \ufffd"),
        (2**70, 2**70),
        # Not a NaN, but the word: the careful way sends it unchanged.
        ("returns null", "returns null"),
    ],
)
def test_values_orjson_would_get_wrong_or_refuses_go_the_careful_way(value: Any, sent: Any) -> None:
    spans = finished({"v": value})
    fast, slow = both_ways(spans)

    assert fast is None
    assert json.loads(slow)["contexts"]["trace"]["data"]["v"] == sent
    assert json.loads(slow)["spans"][0]["data"]["v"] == sent


# Values as the raw OpenTelemetry API lets them through, and as processors set them past it.
values = st.one_of(
    st.text(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(st.one_of(st.text(max_size=5), st.floats(), st.none()), max_size=3).map(tuple),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attributes=st.dictionaries(st.text(max_size=8), values, max_size=5))
def test_whichever_way_a_transaction_goes_it_reads_as_the_careful_way_writes_it(
    attributes: dict[str, Any],
) -> None:
    spans = [
        ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=dict(attributes),
            start_time=span.start_time,
            end_time=span.end_time,
        )
        for span in finished({}, children=1)
    ]
    fast, slow = both_ways(spans)

    expected = json.loads(slow)
    if fast is not None:
        assert json.loads(fast) == expected
    # The careful way is JSON Sentry reads: no NaN or Infinity literal, valid UTF-8.
    json.loads(slow.decode("utf-8"), parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON Sentry reads")


def test_ids_are_fixed_width_lower_case_hex() -> None:
    context = SpanContext(
        trace_id=0xABC, span_id=1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent = otel_trace.set_span_in_context(NonRecordingSpan(context))
    provider.get_tracer("ids").start_span("handler", context=parent).end()
    [span] = exporter.get_finished_spans()

    fields, local_parent = sentry_json.span_fields(span)

    assert fields["trace_id"] == f"{0xABC:032x}"
    assert fields["parent_span_id"] == "0000000000000001"
    assert len(fields["span_id"]) == 16 and fields["span_id"] == fields["span_id"].lower()
    # A parent in another process: the span heads a transaction here.
    assert local_parent is None


def test_a_span_class_of_its_own_is_read_through_its_properties() -> None:
    class Wrapped(ReadableSpan):
        """A processor's own span class: only the public properties are to be trusted."""

        @property
        def attributes(self) -> Any:
            return {"wrapped": True}

    [child, root] = finished({"plain": 1}, children=1)
    wrapped = Wrapped(
        name="wrapped",
        context=child.context,
        parent=child.parent,
        resource=child.resource,
        attributes={"hidden": 1},
        start_time=child.start_time,
        end_time=child.end_time,
    )

    fields, local_parent = sentry_json.span_fields(wrapped)

    assert fields["data"] == {"wrapped": True}
    assert fields["description"] == "wrapped"
    assert local_parent == f"{root.context.span_id:016x}"


class Recorder:
    """A poster that keeps the bodies and answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def post_many(self, bodies: list[bytes]) -> list[HttpAnswer]:
        self.bodies += bodies
        return [HttpAnswer(200, {}) for _ in bodies]

    def close(self) -> None:
        return None


def event_ids(count: int) -> list[str]:
    poster = Recorder()
    sink = SentryEnvelopeSink(
        SentryDsn.parse("http://key@127.0.0.1:9/1"),
        DropCounter(),
        environment=None,
        release=None,
        timeout_s=1.0,
        poster=poster,
    )
    for _ in range(count):
        sink.export(finished({}, children=0))
    return [json.loads(body.split(b"\n")[0])["event_id"] for body in poster.bodies]


def test_event_ids_are_unique_and_do_not_follow_the_applications_random_seed() -> None:
    random.seed(42)
    first = event_ids(200)
    random.seed(42)
    second = event_ids(200)

    assert len(set(first + second)) == 400
    assert all(len(event_id) == 32 and int(event_id, 16) >= 0 for event_id in first)


def test_orjson_missing_sends_every_transaction_the_careful_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = finished({"v": 1.5, "t": "text"})
    with_orjson = sentry_json.encode_event(
        event(*_head_and_rest([sentry_json.span_fields(s)[0] for s in spans]))
    )
    monkeypatch.setattr(sentry_json, "_orjson", None)

    assert with_orjson is not None
    assert (
        sentry_json.encode_event(
            event(*_head_and_rest([sentry_json.span_fields(s)[0] for s in spans]))
        )
        is None
    )


def _head_and_rest(fields: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return fields[-1], fields[:-1]

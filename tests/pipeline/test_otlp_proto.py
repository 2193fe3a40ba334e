"""Our OTLP protobuf encoder against OpenTelemetry's: the same request, for every kind of span.

`encode_request(spans)` must parse to a message equal to the stock `encode_spans(spans)`, the
one the gRPC sink sent before; the sink must deliver that message to a gRPC receiver and fall
back to the stock encoder for a batch ours refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from agent_trace.pipeline.sinks import otlp_proto
from agent_trace.pipeline.sinks._pacing import PacedBatch
from agent_trace.pipeline.sinks.otlp import OtlpSink
from agent_trace.pipeline.sinks.otlp_proto import encode_request
from tests.backends.otlp_recorder import OtlpGrpcRecorder, OtlpHttpRecorder

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
RESOURCE = Resource({"service.name": "checkout", "service.instance.id": "a1"})
SCOPE = InstrumentationScope("agent_trace", "1.2.3", "https://opentelemetry.io/schemas/1.26.0")


def context(span_id: int, *, remote: bool = False, trace_state: TraceState | None = None) -> Any:
    return SpanContext(
        TRACE_ID,
        span_id,
        is_remote=remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=trace_state,
    )


def make_span(
    name: str = "GET /items/{item_id}",
    *,
    span_id: int = 0x00F067AA0BA902B7,
    parent: SpanContext | None = None,
    attributes: Any = None,
    events: Sequence[Event] = (),
    links: Sequence[Link] = (),
    kind: SpanKind = SpanKind.SERVER,
    status: Status | None = None,
    resource: Resource = RESOURCE,
    scope: InstrumentationScope | None = SCOPE,
    start_time: int | None = 1_700_000_000_000_000_000,
    end_time: int | None = 1_700_000_000_012_345_678,
    trace_state: TraceState | None = None,
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=context(span_id, trace_state=trace_state),
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=events,
        links=links,
        kind=kind,
        status=status if status is not None else Status(StatusCode.UNSET),
        start_time=start_time,
        end_time=end_time,
        instrumentation_scope=scope,
    )


def decoded(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_request(spans))


def assert_as_stock(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    ours = decoded(spans)
    assert ours == encode_spans(spans)
    return ours


def only_span(request: ExportTraceServiceRequest) -> Any:
    [resource_spans] = request.resource_spans
    [scope_spans] = resource_spans.scope_spans
    [span] = scope_spans.spans
    return span


@pytest.fixture(autouse=True)
def quiet_stock_encoder(caplog: pytest.LogCaptureFixture) -> None:
    # The stock encoder logs a traceback for each value it leaves out.
    caplog.set_level(logging.CRITICAL, logger="opentelemetry.exporter.otlp.proto.common")


# Values of every type the stock encoder writes, with the edges of each encoding.
VALUES: list[Any] = [
    None,
    "",
    "GET",
    "héllo ✓ 🎉 \x00",
    "x" * 125,
    "x" * 126,
    "x" * 300,
    "y" * 20_000,
    True,
    False,
    0,
    1,
    -1,
    127,
    128,
    16_384,
    2**63 - 1,
    -(2**63),
    0.0,
    -0.0,
    1.5,
    -2.25e300,
    float("nan"),
    float("inf"),
    float("-inf"),
    b"",
    b"\x00\xff",
    [],
    ["a", "b"],
    (1, 2, 3),
    [True, False],
    [1.5, -0.5],
    [1, "a", None, 2.5, b"x", True],
    [[1], [2, [3, "deep"]]],
    {"a": 1, "b": [1, 2], "c": {"d": None}},
    {1: "a key that is not a string"},
    {},
    range(3),
    bytearray(b"ab"),
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:40] for v in VALUES])
def test_each_attribute_value_encodes_as_stock(value: Any) -> None:
    link = Link(context(0x1111, remote=True), {"link.value": value})
    event = Event("e", {"event.value": value}, timestamp=5)
    resource = Resource({"resource.value": value}) if value is not None else RESOURCE
    span = make_span(attributes={"k": value}, events=[event], links=[link], resource=resource)

    request = assert_as_stock([span])

    # And the value really is there: equal to the stock's, not both empty.
    [attribute] = only_span(request).attributes
    assert attribute.key == "k"


def test_a_server_span_from_the_sdk_encodes_as_stock() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.fastapi", "0.66b2")
    with tracer.start_as_current_span("GET /items/{item_id}", kind=SpanKind.SERVER) as span:
        span.set_attributes(
            {
                "http.method": "GET",
                "http.route": "/items/{item_id}",
                "http.status_code": 200,
                "net.peer.port": 50_123,
                "http.url": "http://127.0.0.1:8000/items/7?q=" + "z" * 200,
                "tags": ("a", "b"),
                "ratio": 0.25,
                "cached": False,
            }
        )
        span.add_event("cache miss", {"key": "items:7"})
        span.set_status(Status(StatusCode.ERROR, "boom"))
    with tracer.start_as_current_span("child", kind=SpanKind.CLIENT):
        pass

    request = assert_as_stock(exporter.get_finished_spans())

    assert len(request.resource_spans[0].scope_spans[0].spans) == 2


@pytest.mark.parametrize(
    "value",
    [2**63, -(2**63) - 1, object(), "\ud800", [1, 2**64], {"a": object()}, ["ok", "\udfff"]],
    ids=[
        "int64-max+1",
        "int64-min-1",
        "object",
        "surrogate",
        "list-big",
        "dict-object",
        "list-surr",
    ],
)
def test_a_value_the_stock_encoder_cannot_write_is_left_out(value: Any) -> None:
    span = make_span(attributes={"before": 1, "bad": value, "after": "kept"})

    request = assert_as_stock([span])

    assert [a.key for a in only_span(request).attributes] == ["before", "after"]


@pytest.mark.parametrize("key", [1, 2.5, b"\xff"], ids=repr)
def test_an_attribute_key_that_is_not_text_is_left_out(key: Any) -> None:
    span = make_span(attributes={key: "v", "after": "kept"})

    request = assert_as_stock([span])

    assert [a.key for a in only_span(request).attributes] == ["after"]


def test_a_none_key_is_written_as_an_empty_key_as_the_stock_does() -> None:
    request = assert_as_stock([make_span(attributes={None: "v"})])

    assert [(a.key, a.value.string_value) for a in only_span(request).attributes] == [("", "v")]


def test_a_utf8_bytes_key_is_taken_as_text_as_the_stock_does() -> None:
    request = assert_as_stock([make_span(attributes={b"bytes.key": 1})])

    assert [a.key for a in only_span(request).attributes] == ["bytes.key"]


@pytest.mark.parametrize(
    ("parent", "flags"),
    [
        (None, 0x100),
        (context(0x2222), 0x100),
        (context(0x2222, remote=True), 0x300),
    ],
    ids=["root", "local-parent", "remote-parent"],
)
def test_the_parent_sets_parent_span_id_and_the_remote_flags(
    parent: SpanContext | None, flags: int
) -> None:
    span = only_span(assert_as_stock([make_span(parent=parent)]))

    assert span.flags == flags
    assert span.parent_span_id == (b"" if parent is None else (0x2222).to_bytes(8, "big"))


def test_the_trace_state_is_written_as_comma_separated_pairs() -> None:
    state = TraceState([("vendor", "v1"), ("other", "x-2")])

    span = only_span(assert_as_stock([make_span(trace_state=state)]))

    assert span.trace_state == "vendor=v1,other=x-2"


def test_links_with_and_without_trace_state_and_remote_contexts() -> None:
    links = [
        Link(context(0x3333)),
        Link(context(0x4444, remote=True, trace_state=TraceState([("k", "v")])), {"n": 1}),
        Link(context(0x5555), BoundedAttributes(maxlen=1, attributes={"a": 1, "b": 2})),
    ]

    span = only_span(assert_as_stock([make_span(links=links)]))

    assert [link.flags for link in span.links] == [0x100, 0x300, 0x100]
    assert span.links[2].dropped_attributes_count == 1


def test_events_with_and_without_attributes() -> None:
    events = [
        Event("plain", timestamp=1_700_000_000_000_000_001),
        Event("", {"x": "y", "n": [1, 2]}, timestamp=7),
        Event("bounded", BoundedAttributes(maxlen=1, attributes={"a": 1, "b": 2}), timestamp=8),
    ]

    span = only_span(assert_as_stock([make_span(events=events)]))

    assert [e.name for e in span.events] == ["plain", "", "bounded"]
    assert span.events[2].dropped_attributes_count == 1


def test_dropped_attributes_events_and_links_are_counted() -> None:
    attributes = BoundedAttributes(maxlen=2, attributes={f"k{i}": i for i in range(5)})
    events = BoundedList.from_seq(1, [Event(f"e{i}", timestamp=i + 1) for i in range(4)])
    links = BoundedList.from_seq(2, [Link(context(0x100 + i)) for i in range(5)])

    span = only_span(
        assert_as_stock([make_span(attributes=attributes, events=events, links=links)])
    )

    assert (span.dropped_attributes_count, span.dropped_events_count) == (3, 3)
    assert span.dropped_links_count == 3


def test_all_attributes_dropped_still_counts_them() -> None:
    attributes = BoundedAttributes(maxlen=0, attributes={"a": 1, "b": 2})

    span = only_span(assert_as_stock([make_span(attributes=attributes)]))

    assert span.dropped_attributes_count == 2


@pytest.mark.parametrize("kind", list(SpanKind), ids=lambda k: k.name)
@pytest.mark.parametrize(
    "status",
    [
        Status(StatusCode.UNSET),
        Status(StatusCode.OK),
        Status(StatusCode.ERROR),
        Status(StatusCode.ERROR, "ValueError: ü"),
    ],
    ids=["unset", "ok", "error", "error-message"],
)
def test_kinds_and_statuses_encode_as_stock(kind: SpanKind, status: Status) -> None:
    span = only_span(assert_as_stock([make_span(kind=kind, status=status)]))

    assert span.kind == kind.value + 1
    assert span.HasField("status")


def test_several_resources_and_scopes_keep_the_order_first_seen() -> None:
    other = Resource({"service.name": "billing"}, schema_url="https://example.test/schema")
    equal_to_first = Resource({"service.name": "checkout", "service.instance.id": "a1"})
    scoped = InstrumentationScope("lib", None, None, {"scope.attr": "x", "n": 3})
    spans = [
        make_span("a", span_id=1, resource=other, scope=scoped),
        make_span("b", span_id=2),
        make_span("c", span_id=3, resource=other, scope=None),
        make_span("d", span_id=4, resource=equal_to_first, scope=scoped),
        make_span("e", span_id=5, resource=other, scope=scoped),
        make_span("f", span_id=6, resource=equal_to_first),
    ]

    request = assert_as_stock(spans)

    names = [
        [[s.name for s in scope.spans] for scope in rs.scope_spans] for rs in request.resource_spans
    ]
    assert names == [[["a", "e"], ["c"]], [["b", "f"], ["d"]]]
    assert request.resource_spans[0].schema_url == "https://example.test/schema"


def test_empty_names_missing_times_and_unicode_names() -> None:
    spans = [
        make_span("", span_id=1, start_time=None, end_time=None),
        make_span("naïve ✓", span_id=2, start_time=0, end_time=2**64 - 1),
    ]

    assert_as_stock(spans)


def test_a_readable_span_subclass_is_read_through_its_properties() -> None:
    class Renamed(ReadableSpan):
        @property
        def name(self) -> str:
            return "renamed"

    base = make_span("stored", attributes={"a": 1})
    span = Renamed(
        name=base.name,
        context=base.context,
        resource=base.resource,
        attributes=base.attributes,
        kind=base.kind,
        status=base.status,
        start_time=base.start_time,
        end_time=base.end_time,
        instrumentation_scope=base.instrumentation_scope,
    )

    assert only_span(assert_as_stock([span])).name == "renamed"


def test_an_unknown_kind_raises_as_the_stock_encoder_does() -> None:
    span = make_span(kind="server")  # type: ignore[arg-type]

    with pytest.raises(KeyError):
        encode_spans([span])
    with pytest.raises(KeyError):
        encode_request([span])


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_request([]) == b""
    assert decoded([]) == encode_spans([])


def test_the_batch_is_read_by_iteration_only() -> None:
    class IterateOnly(Sequence[ReadableSpan]):
        def __init__(self, spans: list[ReadableSpan]) -> None:
            self._spans = spans

        def __len__(self) -> int:
            return len(self._spans)

        def __getitem__(self, index: Any) -> Any:
            raise AssertionError("the encoder indexed into the batch")

        def __iter__(self) -> Iterator[ReadableSpan]:
            return iter(self._spans)

    spans = [make_span(span_id=i + 1) for i in range(3)]

    assert decoded(IterateOnly(spans)) == encode_spans(spans)


def test_a_cached_resource_encoding_follows_each_new_resource() -> None:
    first = assert_as_stock([make_span(resource=Resource({"service.name": "one"}))])
    second = assert_as_stock([make_span(resource=Resource({"service.name": "two"}))])

    assert first.resource_spans[0].resource != second.resource_spans[0].resource


# --- Random spans ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=20),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=10),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
    ),
    max_leaves=8,
)
attribute_maps = st.dictionaries(st.text(max_size=12), values, max_size=6)
ids = st.integers(min_value=1, max_value=2**64 - 1)
names = st.text(max_size=30)
timestamps = st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1))
trace_states = st.one_of(
    st.none(),
    st.lists(
        st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), st.sampled_from("abc1")),
        max_size=3,
        unique_by=lambda pair: pair[0],
    ).map(TraceState),
)


@st.composite
def contexts(draw: st.DrawFn) -> SpanContext:
    return SpanContext(
        draw(st.integers(min_value=1, max_value=2**128 - 1)),
        draw(ids),
        is_remote=draw(st.booleans()),
        trace_flags=TraceFlags(draw(st.sampled_from([0, 1]))),
        trace_state=draw(trace_states),
    )


@st.composite
def bounded(draw: st.DrawFn, attributes: dict[str, Any]) -> Any:
    if not draw(st.booleans()):
        return attributes
    # BoundedAttributes keeps only the values the SDK accepts and counts what maxlen drops.
    return BoundedAttributes(maxlen=draw(st.integers(0, 4)), attributes=attributes)


RESOURCES = [
    RESOURCE,
    Resource({"service.name": "checkout", "service.instance.id": "a1"}),
    Resource({"service.name": "billing", "list": ["x", "y"]}, "https://example.test/s"),
]
SCOPES = [
    SCOPE,
    None,
    InstrumentationScope("lib"),
    InstrumentationScope("lib", "2", None, {"a": 1}),
]


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    events = [
        Event(draw(names), draw(attribute_maps.flatmap(bounded)), timestamp=draw(timestamps))
        for _ in range(draw(st.integers(0, 2)))
    ]
    links = [
        Link(draw(contexts()), draw(attribute_maps.flatmap(bounded)))
        for _ in range(draw(st.integers(0, 2)))
    ]
    if draw(st.booleans()):
        events = BoundedList.from_seq(draw(st.integers(0, 2)), events)  # type: ignore[assignment]
        links = BoundedList.from_seq(draw(st.integers(0, 2)), links)  # type: ignore[assignment]
    code = draw(st.sampled_from(list(StatusCode)))
    description = draw(st.one_of(st.none(), names)) if code is StatusCode.ERROR else None
    return ReadableSpan(
        name=draw(names),
        context=draw(contexts()),
        parent=draw(st.one_of(st.none(), contexts())),
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=draw(attribute_maps.flatmap(bounded)),
        events=events,
        links=links,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=Status(code, description),
        start_time=draw(timestamps),
        end_time=draw(timestamps),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), max_size=6))
def test_random_batches_encode_as_stock(batch: list[ReadableSpan]) -> None:
    assert decoded(batch) == encode_spans(batch)


# --- Through the gRPC sink ---------------------------------------------------------------------


def export_through_sink(recorder: OtlpGrpcRecorder, batch: Sequence[ReadableSpan]) -> Any:
    sink = OtlpSink("otlp", recorder.endpoint, protocol="grpc", headers={}, timeout_s=5.0)
    try:
        assert sink.export(batch)
    finally:
        sink.shutdown()
    [call] = recorder.calls
    return call.request


BATCH = [
    make_span("a", span_id=1, attributes={"http.method": "GET", "n": 2**40, "f": [1.5, None]}),
    make_span("b", span_id=2, parent=context(1, remote=True), resource=RESOURCES[2], scope=None),
    make_span("c", span_id=3, events=[Event("e", {"k": "v"}, timestamp=3)]),
]


@pytest.fixture
def ours(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The requests our encoder writes from now on, as it writes them."""
    encoded: list[bytes] = []

    def spy(spans: Sequence[ReadableSpan]) -> bytes:
        encoded.append(encode_request(spans))
        return encoded[-1]

    monkeypatch.setattr(otlp_proto, "encode_request", spy)
    return encoded


@pytest.fixture
def ours_refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our encoder refuses every batch from now on, as it refuses a value it does not take."""

    def refuse(spans: Sequence[ReadableSpan]) -> bytes:
        raise ValueError("a value our encoder does not take")

    monkeypatch.setattr(otlp_proto, "encode_request", refuse)


@pytest.mark.integration
def test_a_grpc_export_delivers_the_stock_request_encoded_by_ours(
    otlp_grpc_recorder: OtlpGrpcRecorder, ours: list[bytes]
) -> None:
    received = export_through_sink(otlp_grpc_recorder, PacedBatch(BATCH))

    assert received == encode_spans(BATCH)
    assert [ExportTraceServiceRequest.FromString(data) for data in ours] == [received]


@pytest.mark.integration
def test_a_grpc_export_falls_back_to_the_stock_encoder(
    otlp_grpc_recorder: OtlpGrpcRecorder, ours_refusing: None
) -> None:
    received = export_through_sink(otlp_grpc_recorder, BATCH)

    assert received == encode_spans(BATCH)


# --- Through the HTTP/protobuf sink ------------------------------------------------------------


def export_over_http(recorder: OtlpHttpRecorder, batch: Sequence[ReadableSpan]) -> list[Any]:
    sink = OtlpSink("otlp", recorder.traces_url, protocol="http", headers={}, timeout_s=5.0)
    try:
        assert sink.export(batch)
    finally:
        sink.shutdown()
    return recorder.requests


@pytest.mark.integration
def test_an_http_export_delivers_the_stock_request_encoded_by_ours(
    otlp_http_recorder: OtlpHttpRecorder, ours: list[bytes]
) -> None:
    [request] = export_over_http(otlp_http_recorder, PacedBatch(BATCH))

    assert request.decoded == encode_spans(BATCH)
    assert ours == [request.content]


@pytest.mark.integration
def test_an_http_export_keeps_the_exporters_compression(
    otlp_http_recorder: OtlpHttpRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")

    [request] = export_over_http(otlp_http_recorder, BATCH)

    assert request.header("Content-Encoding") == "gzip"
    assert request.decoded == encode_spans(BATCH)


@pytest.mark.integration
def test_an_http_export_falls_back_to_the_stock_encoder(
    otlp_http_recorder: OtlpHttpRecorder, ours_refusing: None
) -> None:
    [request] = export_over_http(otlp_http_recorder, BATCH)

    assert request.decoded == encode_spans(BATCH)


@pytest.mark.integration
def test_an_http_export_the_receiver_refuses_is_a_failure(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    otlp_http_recorder.fail(400, "bad request")
    sink = OtlpSink(
        "otlp", otlp_http_recorder.traces_url, protocol="http", headers={}, timeout_s=5.0
    )
    try:
        assert sink.export(BATCH) is False
    finally:
        sink.shutdown()
    assert len(otlp_http_recorder.requests) == 1

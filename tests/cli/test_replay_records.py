"""`agent-trace replay` rebuilding SDK spans: what OTLP cannot carry is skipped or mended."""

from __future__ import annotations

from typing import Any

from agent_trace.cli import replay
from agent_trace.tracefile import SpanEvent, SpanRecord

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_764_000_000_000_000_000


def record(
    name: str = "invoke_agent ethics",
    *,
    start: int = T0,
    end: int = T0 + 10,
    attrs: dict[str, Any] | None = None,
    events: tuple[SpanEvent, ...] = (),
    message: str = "",
    resource: dict[str, Any] | None = None,
) -> SpanRecord:
    return SpanRecord(
        TRACE,
        "00f067aa0ba902b7",
        None,
        name,
        1,
        start,
        end,
        attrs or {},
        events,
        0,
        message,
        resource if resource is not None else {"service.name": "svc"},
        1,
    )


def test_times_outside_otlps_range_make_a_span_unsendable() -> None:
    assert replay.unsendable(record()) is None
    assert replay.unsendable(record(start=T0, end=2**64 - 1)) is None
    assert replay.unsendable(record(end=2**64)) == "a time outside OTLP's 64-bit range"
    assert replay.unsendable(record(start=-1)) == "a time outside OTLP's 64-bit range"
    late_event = (SpanEvent("e", 2**70, {}),)
    assert replay.unsendable(record(events=late_event)) == "a time outside OTLP's 64-bit range"


def test_the_rebuilder_skips_what_it_cannot_send_and_says_why() -> None:
    rebuilder = replay._Rebuilder()

    assert isinstance(rebuilder.span(record(end=2**64)), str)
    assert not isinstance(rebuilder.span(record()), str)
    assert rebuilder.mended == 0


def test_lone_surrogates_are_replaced_in_every_text_of_a_span() -> None:
    broken = record(
        "invoke_agent e\ud800",
        attrs={"k\udcff": "v\ud800", "list": ["a", "b\udc00"], "map": {"x\ud800": ["y\udfff"]}},
        events=(SpanEvent("exception\ud801", T0 + 1, {"exception.message": "m\udc01"}),),
        message="failed\ud802",
    )

    mended = replay.mend_text(broken)

    assert mended.name == "invoke_agent e\ufffd"
    assert mended.attributes == {
        "k\ufffd": "v\ufffd",
        "list": ["a", "b\ufffd"],
        "map": {"x\ufffd": ["y\ufffd"]},
    }
    assert mended.events == (
        SpanEvent("exception\ufffd", T0 + 1, {"exception.message": "m\ufffd"}),
    )
    assert mended.status_message == "failed\ufffd"
    assert (mended.trace_id, mended.span_id, mended.start_ns) == (TRACE, broken.span_id, T0)


def test_a_span_without_lone_surrogates_is_passed_on_as_it_is() -> None:
    plain = record(attrs={"k": "審査 ✓", "n": [1, 2]}, message="ok")
    assert replay.mend_text(plain) is plain


def test_each_resource_mapping_gets_its_own_resource_and_is_mended() -> None:
    rebuilder = replay._Rebuilder()
    shared = {"service.name": "svc-a"}

    first = rebuilder.span(record(resource=shared))
    second = rebuilder.span(record(resource=shared))
    other = rebuilder.span(record(resource={"service.name": "svc-b\ud800"}))

    assert not isinstance(first, str)
    assert not isinstance(second, str)
    assert not isinstance(other, str)
    assert first.resource is second.resource
    assert first.resource.attributes["service.name"] == "svc-a"
    assert other.resource.attributes["service.name"] == "svc-b\ufffd"
    assert rebuilder.mended == 1

"""Trace context between services: W3C traceparent and baggage plus sentry-trace."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter

import agent_trace
from agent_trace._log import _reset_for_tests as _log_reset_for_tests
from agent_trace.pipeline.propagation import AgentTracePropagator
from agent_trace.testing import CapturedSpans, capture_spans

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


class ListSetter(Setter[list[tuple[str, str]]]):
    """Appends, as a raw header list does: a second value for a name would show up twice."""

    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans() as captured:
        yield captured


def injected_headers() -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    propagate.inject(headers, setter=ListSetter())
    return headers


def names(headers: list[tuple[str, str]]) -> list[str]:
    return sorted(k for k, _ in headers)


def session_under(carrier: dict[str, object]) -> tuple[str, int | None]:
    """Start a session in the extracted context; returns its trace id and remote parent id."""
    token = otel_context.attach(propagate.extract(carrier))
    try:
        with agent_trace.session("incoming") as s:
            span = s.span
    finally:
        otel_context.detach(token)
    # A sampled-out session has a non-recording span, which has no parent to show.
    parent = getattr(span, "parent", None)
    return s.trace_id, (parent.span_id if parent is not None else None)


# -- inject -----------------------------------------------------------------------------------


def test_inject_writes_exactly_one_of_each_header(spans: CapturedSpans) -> None:
    with agent_trace.session("outgoing") as s, s.turn("legal", remote=True) as turn:
        headers = injected_headers()

    assert names(headers) == ["baggage", "sentry-trace", "traceparent"]
    values = dict(headers)
    assert values["traceparent"] == f"00-{s.trace_id}-{turn.span_id}-01"
    assert values["sentry-trace"] == f"{s.trace_id}-{turn.span_id}-1"
    entries = values["baggage"].split(",")
    assert f"sentry-trace_id={s.trace_id}" in entries
    assert "sentry-sampled=true" in entries


def test_inject_passes_user_baggage_on_once_and_replaces_incoming_sentry_entries(
    spans: CapturedSpans,
) -> None:
    incoming = {"traceparent": VALID, "baggage": "tenant=acme,sentry-trace_id=" + "f" * 32}
    token = otel_context.attach(propagate.extract(incoming))
    try:
        with agent_trace.session("relay") as s:
            headers = injected_headers()
    finally:
        otel_context.detach(token)

    assert names(headers) == ["baggage", "sentry-trace", "traceparent"]
    entries = dict(headers)["baggage"].split(",")
    assert entries.count("tenant=acme") == 1
    assert [e for e in entries if e.startswith("sentry-trace_id=")] == [
        f"sentry-trace_id={s.trace_id}"
    ]


def test_inject_outside_any_span_writes_nothing(spans: CapturedSpans) -> None:
    assert injected_headers() == []


def test_inject_in_a_sampled_out_trace_says_so() -> None:
    with capture_spans(sample_rate=0.0), agent_trace.session("dropped") as s:
        values = dict(injected_headers())

    assert values["traceparent"].endswith("-00")
    assert values["sentry-trace"].endswith("-0")
    assert values["traceparent"].split("-")[1] == s.trace_id
    assert "sentry-sampled=false" in values["baggage"].split(",")


def test_inject_adds_the_sentry_dynamic_sampling_context() -> None:
    propagator = AgentTracePropagator(
        {"sentry-public_key": "public", "sentry-environment": "prod", "sentry-release": "r 1"}
    )
    with capture_spans(), agent_trace.session("outgoing"):
        headers: list[tuple[str, str]] = []
        propagator.inject(headers, setter=ListSetter())

    entries = dict(headers)["baggage"].split(",")
    assert "sentry-public_key=public" in entries
    assert "sentry-environment=prod" in entries
    assert "sentry-release=r%201" in entries
    assert names(headers) == ["baggage", "sentry-trace", "traceparent"]


def bounded_baggage(**entries: str) -> tuple[str, AgentTracePropagator]:
    """The baggage header a fresh propagator writes in a session carrying `entries`."""
    propagator = AgentTracePropagator({"sentry-release": "r1"})
    with capture_spans(), agent_trace.session("outgoing"):
        ctx = otel_context.get_current()
        for key, value in entries.items():
            ctx = baggage.set_baggage(key, value, ctx)
        carrier: dict[str, str] = {}
        propagator.inject(carrier, context=ctx)
    return carrier["baggage"], propagator


def test_outgoing_baggage_puts_sentrys_entries_first() -> None:
    header, _ = bounded_baggage(tenant="acme")

    keys = [entry.split("=", 1)[0] for entry in header.split(",")]
    assert keys == ["sentry-trace_id", "sentry-sampled", "sentry-release", "tenant"]


def test_an_outgoing_baggage_entry_over_4096_bytes_is_left_out_and_counted() -> None:
    header, propagator = bounded_baggage(note="v" * 5000, tenant="acme")

    assert "note=" not in header
    assert "tenant=acme" in header.split(",")
    assert propagator.baggage_left_out() == {"entry_too_long": 1}


def test_outgoing_baggage_stays_within_8192_bytes_and_a_receiver_keeps_all_of_it() -> None:
    entries = {f"k{i}": "v" * 4000 for i in range(4)}
    header, propagator = bounded_baggage(**entries)

    assert len(header.encode()) <= 8192
    assert propagator.baggage_left_out() == {"header_too_long": 2}
    received = baggage.get_all(AgentTracePropagator().extract({"baggage": header}))
    assert sorted(received) == ["k0", "k1", "sentry-release", "sentry-sampled", "sentry-trace_id"]


def test_outgoing_baggage_stays_within_180_entries_sentrys_included() -> None:
    header, propagator = bounded_baggage(**{f"k{i}": "v" for i in range(200)})

    entries = header.split(",")
    assert len(entries) == 180
    assert entries[0].startswith("sentry-trace_id=")
    assert entries[1:3] == ["sentry-sampled=true", "sentry-release=r1"]
    assert entries[-1] == "k176=v"
    assert propagator.baggage_left_out() == {"too_many_entries": 23}


def test_leaving_out_baggage_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    _log_reset_for_tests()
    propagator = AgentTracePropagator()
    with capture_spans(), agent_trace.session("outgoing"):
        ctx = baggage.set_baggage("note", "v" * 5000)
        with caplog.at_level(logging.WARNING, logger="agent_trace.pipeline.propagation"):
            for _ in range(3):
                propagator.inject({}, context=ctx)

    warnings = [r for r in caplog.records if r.name == "agent_trace.pipeline.propagation"]
    assert len(warnings) == 1
    assert "entry_too_long: 1" in warnings[0].getMessage()
    assert propagator.baggage_left_out() == {"entry_too_long": 3}


# -- extract ----------------------------------------------------------------------------------


def test_valid_traceparent_continues_the_trace(spans: CapturedSpans) -> None:
    trace_id, parent_id = session_under({"traceparent": VALID})

    assert trace_id == TRACE
    assert parent_id == int(SPAN, 16)
    root = spans.one("invoke_workflow incoming")
    assert root.parent is not None and root.parent.is_remote


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-xyz-01",
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}",
        f"00-{TRACE[:-1]}-{SPAN}-01",
        "",
    ],
    ids=[
        "garbage",
        "uppercase",
        "zero-trace",
        "zero-span",
        "version-ff",
        "no-flags",
        "short",
        "empty",
    ],
)
def test_malformed_traceparent_starts_a_fresh_trace(spans: CapturedSpans, traceparent: str) -> None:
    trace_id, parent_id = session_under({"traceparent": traceparent})

    assert trace_id != TRACE
    assert parent_id is None


def test_oversized_traceparent_starts_a_fresh_trace(spans: CapturedSpans) -> None:
    trace_id, parent_id = session_under({"traceparent": VALID + "-" + "a" * 5000})

    assert trace_id != TRACE
    assert parent_id is None


@pytest.mark.parametrize(
    "values",
    [[VALID, f"00-{'1' * 32}-{SPAN}-01"], [VALID, VALID]],
    ids=["different", "identical"],
)
def test_duplicated_traceparent_starts_a_fresh_trace(
    spans: CapturedSpans, values: list[str]
) -> None:
    trace_id, parent_id = session_under({"traceparent": values})

    assert trace_id != TRACE
    assert parent_id is None


def test_sentry_trace_is_used_when_there_is_no_traceparent(spans: CapturedSpans) -> None:
    trace_id, parent_id = session_under({"sentry-trace": f"{TRACE}-{SPAN}-1"})

    assert trace_id == TRACE
    assert parent_id == int(SPAN, 16)


def test_sentry_trace_without_a_sampling_flag_is_accepted(spans: CapturedSpans) -> None:
    trace_id, _ = session_under({"sentry-trace": f"{TRACE}-{SPAN}"})

    assert trace_id == TRACE


def test_sentry_trace_unsampled_is_respected(spans: CapturedSpans) -> None:
    session_under({"sentry-trace": f"{TRACE}-{SPAN}-0"})

    assert spans.spans == []


def test_traceparent_wins_over_sentry_trace(spans: CapturedSpans) -> None:
    other = "1" * 32
    trace_id, _ = session_under({"traceparent": VALID, "sentry-trace": f"{other}-{SPAN}-1"})

    assert trace_id == TRACE


def test_sentry_trace_is_not_a_fallback_for_a_malformed_traceparent(spans: CapturedSpans) -> None:
    trace_id, parent_id = session_under(
        {"traceparent": "00-broken", "sentry-trace": f"{TRACE}-{SPAN}-1"}
    )

    assert trace_id != TRACE
    assert parent_id is None


def test_malformed_sentry_trace_is_ignored(spans: CapturedSpans) -> None:
    trace_id, parent_id = session_under({"sentry-trace": f"{TRACE}-nothex-1"})

    assert trace_id != TRACE
    assert parent_id is None


def test_baggage_is_kept_for_propagation_but_never_becomes_attributes(
    spans: CapturedSpans,
) -> None:
    incoming = {"traceparent": VALID, "baggage": "tenant=acme,user.email=bob%40example.org"}
    ctx = propagate.extract(incoming)

    assert baggage.get_all(ctx) == {"tenant": "acme", "user.email": "bob@example.org"}
    token = otel_context.attach(ctx)
    try:
        with agent_trace.session("incoming") as s, s.turn("ethics"):
            pass
    finally:
        otel_context.detach(token)

    for span in spans.spans:
        for key, value in (span.attributes or {}).items():
            assert "tenant" not in key and "email" not in key, (span.name, key)
            assert "acme" not in str(value) and "bob" not in str(value), (span.name, key)


def test_oversized_baggage_is_dropped(spans: CapturedSpans) -> None:
    ctx = propagate.extract({"traceparent": VALID, "baggage": "k=" + "v" * 9000})

    assert baggage.get_all(ctx) == {}


NON_TEXT_BAGGAGE: dict[str, object] = {
    "bytes, which the default getter turns into ints": b"tenant=acme",
    "an int": 5,
    "None beside text": [None, "tenant=acme"],
    "a list of bytes": [b"tenant=acme"],
    "a bytearray": bytearray(b"tenant=acme"),
}


@pytest.mark.parametrize("value", NON_TEXT_BAGGAGE.values(), ids=list(NON_TEXT_BAGGAGE))
def test_non_text_baggage_is_ignored_and_the_parent_kept(
    spans: CapturedSpans, value: object
) -> None:
    ctx = propagate.extract({"traceparent": VALID, "baggage": value})

    assert f"{trace.get_current_span(ctx).get_span_context().trace_id:032x}" == TRACE
    assert baggage.get_all(ctx) in ({}, {"tenant": "acme"})


def test_text_baggage_beside_a_non_text_value_is_kept(spans: CapturedSpans) -> None:
    ctx = propagate.extract({"traceparent": VALID, "baggage": ["tenant=acme", None, b"x=y"]})

    assert baggage.get_all(ctx) == {"tenant": "acme"}


class ScalarGetter(Getter[dict[str, object]]):
    """Hands over each value as it is, not in a list: a getter written against the docs' grain."""

    def get(self, carrier: dict[str, object], key: str) -> Any:
        return carrier.get(key)

    def keys(self, carrier: dict[str, object]) -> list[str]:
        return list(carrier)


def test_a_getter_handing_over_a_bare_number_neither_raises_nor_loses_the_parent(
    spans: CapturedSpans,
) -> None:
    carrier: dict[str, object] = {"traceparent": VALID, "tracestate": 5, "baggage": 7}
    ctx = AgentTracePropagator().extract(carrier, getter=ScalarGetter())

    assert f"{trace.get_current_span(ctx).get_span_context().trace_id:032x}" == TRACE
    assert AgentTracePropagator().extract({"traceparent": 5}, getter=ScalarGetter()) == Context()


def test_a_message_with_non_text_baggage_still_links_to_its_send(spans: CapturedSpans) -> None:
    with (
        agent_trace.session("receiver"),
        agent_trace.process_message(
            "legal", {"traceparent": VALID, "baggage": b"tenant=acme"}, message_type="proposal"
        ),
    ):
        pass

    [span] = spans.find("process legal")
    assert [f"{link.context.trace_id:032x}" for link in span.links] == [TRACE]


def test_extract_round_trips_what_inject_wrote(spans: CapturedSpans) -> None:
    with agent_trace.session("caller") as caller, caller.turn("legal", remote=True) as turn:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)

    token = otel_context.attach(propagate.extract(carrier))
    try:
        with agent_trace.session("callee") as callee:
            pass
    finally:
        otel_context.detach(token)

    assert callee.trace_id == caller.trace_id
    callee_span = spans.one("invoke_workflow callee")
    assert callee_span.parent is not None
    assert f"{callee_span.parent.span_id:016x}" == turn.span_id


def test_the_global_propagator_is_agent_traces_own(spans: CapturedSpans) -> None:
    assert isinstance(propagate.get_global_textmap(), AgentTracePropagator)
    assert propagate.get_global_textmap().fields == {
        "traceparent",
        "tracestate",
        "baggage",
        "sentry-trace",
    }

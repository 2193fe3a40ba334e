"""The Sentry envelope sink attacked as a new user and a hostile network would.

Each span that reaches the sink is accounted for exactly once: posted and answered with a
2xx, or counted with one reason. The envelopes are checked the way Sentry reads them:
sentry-sdk's own `Envelope.deserialize` for the wire format, and Relay's normalizer, fed the
raw JSON bytes, for the payload (Rust's JSON parser is stricter than Python's).

The sink is driven directly with spans made by the OpenTelemetry SDK, against servers of the
test's own on 127.0.0.1; a fake poster stands in only where a test needs a DSN host that is
not loopback (which nothing here may connect to) or looks at how envelopes are grouped (which
the wire does not show).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sentry_relay.processing import StoreNormalizer
from sentry_sdk.envelope import Envelope

from agent_trace._config import SentryDsn
from agent_trace.pipeline.drops import DropCounter
from agent_trace.pipeline.sinks import sentry_json
from agent_trace.pipeline.sinks._http import HttpAnswer, HttpError
from agent_trace.pipeline.sinks.sentry_envelope import SentryEnvelopeSink
from tests.backends.otlp_recorder import OtlpHttpRecorder, closed_port

pytestmark = pytest.mark.integration

KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


# -- the parts ------------------------------------------------------------------------------


class Spans:
    """Real SDK spans, finished in the order a test ends them."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "attacks"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("attacks")

    def take(self) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans

    def sessions(self, count: int, children: int = 1) -> list[ReadableSpan]:
        """`count` local roots with `children` children each, children first."""
        for index in range(count):
            with self.tracer.start_as_current_span(f"session {index}"):
                for child in range(children):
                    with self.tracer.start_as_current_span(f"turn {child}"):
                        pass
        return self.take()


@pytest.fixture
def spans() -> Spans:
    return Spans()


@pytest.fixture(autouse=True, params=["orjson", "standard library"])
def json_encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attack twice: transactions encoded by orjson where it can, and (as on PyPy,
    where it has no wheel) each the careful way, with the standard library's encoder."""
    if request.param == "standard library":
        monkeypatch.setattr(sentry_json, "_orjson", None)


def make_sink(port: int, drops: DropCounter, **kwargs: Any) -> SentryEnvelopeSink:
    options: dict[str, Any] = {"environment": None, "release": None, "timeout_s": 5.0}
    options.update(kwargs)
    dsn = SentryDsn.parse(f"http://{KEY}@127.0.0.1:{port}/3")
    return SentryEnvelopeSink(dsn, drops, **options)


def total(drops: DropCounter) -> dict[str, int]:
    return {reason: n for (sink, reason), n in drops.snapshot().items() if sink == "sentry"}


def envelope_of(body: bytes) -> Envelope:
    """The body parsed as sentry-sdk parses an envelope, after checking the item length."""
    header_line, _, rest = body.partition(b"\n")
    json.loads(header_line)
    item_line, _, payload = rest.partition(b"\n")
    assert json.loads(item_line)["length"] == len(payload)
    return Envelope.deserialize(body)


def relay_problems(payload: bytes) -> list[Any]:
    """What Sentry's normalizer says about the raw JSON of a transaction (raises if invalid)."""
    normalizer = StoreNormalizer(project_id=3, key_id="public", protocol_version="7")
    normalized = normalizer.normalize_event(raw_event=payload)
    return list(normalized.get("errors") or [])


class ScriptedSentry:
    """An HTTP/1.1 server on 127.0.0.1 answering each request by a script, in order.

    Entries: an int status (with `headers`), "hang" (read it, never answer, keep reading), or
    "close" (end the connection without an answer). Past the script every request gets 200.
    Pipelined requests are read one after another from the same connection.
    """

    def __init__(self, script: list[Any], headers: dict[int, dict[str, str]] | None = None):
        self.script = list(script)
        self.headers = headers or {}
        self.bodies: list[bytes] = []
        self.seen = threading.Semaphore(0)
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # stopped
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = reader.read(length)
                index = len(self.bodies)
                self.bodies.append(body)
                self.seen.release()
                step = self.script[index] if index < len(self.script) else 200
                if step == "hang":
                    self._stop.wait()
                    return
                if step == "close":
                    return
                extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.get(index, {}).items())
                conn.sendall(f"HTTP/1.1 {step} X\r\n{extra}Content-Length: 2\r\n\r\n{{}}".encode())
        except OSError:
            return
        finally:
            conn.close()

    def wait_for(self, count: int) -> None:
        for _ in range(count):
            assert self.seen.acquire(timeout=10), f"{len(self.bodies)} of {count} requests"

    def stop(self) -> None:
        self._stop.set()
        self._server.close()


@pytest.fixture
def scripted() -> Iterator[list[ScriptedSentry]]:
    servers: list[ScriptedSentry] = []
    yield servers
    for server in servers:
        server.stop()


def scripted_sentry(servers: list[ScriptedSentry], script: list[Any], **kw: Any) -> ScriptedSentry:
    server = ScriptedSentry(script, **kw)
    servers.append(server)
    return server


class FakePoster:
    """Records what the sink would post, answers 200; for DSN hosts nothing may reach."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.groups: list[list[bytes]] = []

    def post_many(self, bodies: list[bytes]) -> list[HttpAnswer | HttpError]:
        self.groups.append(list(bodies))
        self.bodies.extend(bodies)
        return [HttpAnswer(200, {}) for _ in bodies]

    def close(self) -> None:
        pass


# -- accounting -----------------------------------------------------------------------------


def test_every_span_of_a_mixed_pipelined_group_is_counted_once_by_its_answer(
    spans: Spans, scripted: list[ScriptedSentry]
) -> None:
    # One group of 6 transactions (2 spans each): accepted, rate limited, too large, failed,
    # accepted, and one the server never answers.
    server = scripted_sentry(
        scripted, [200, 429, 413, 500, 202, "hang"], headers={1: {"Retry-After": "0"}}
    )
    drops = DropCounter()
    sink = make_sink(server.port, drops, timeout_s=1.0)

    assert sink.export(spans.sessions(6)) is False

    assert total(drops) == {
        "rate_limited": 2,
        "rejected": 2,
        "server_error": 2,
        "network_error": 2,
    }
    assert sink.transactions_sent == 2
    sink.shutdown()
    assert total(drops)["network_error"] == 2  # nothing left to write off
    assert "shutdown_timeout" not in total(drops)


def test_flush_says_false_once_for_each_loss_and_true_after(
    spans: Spans, scripted: list[ScriptedSentry]
) -> None:
    server = scripted_sentry(scripted, [500])
    drops = DropCounter()
    sink = make_sink(server.port, drops)
    with spans.tracer.start_as_current_span("open"):
        with spans.tracer.start_as_current_span("left over"):
            pass
        leftover = spans.take()

        assert sink.export(leftover) is True  # parked: nothing sent yet
        assert sink.flush(5.0) is False  # sent now, and Sentry answered 500
        assert sink.flush(5.0) is True
        assert sink.export(spans.sessions(1)) is True
        assert sink.flush(5.0) is True

    assert total(drops) == {"server_error": 1}
    assert sink.transactions_sent == 1


def test_a_connection_closed_part_way_loses_only_the_unanswered_transactions(
    spans: Spans, scripted: list[ScriptedSentry]
) -> None:
    server = scripted_sentry(scripted, [200, 200, "close"])
    drops = DropCounter()
    sink = make_sink(server.port, drops)

    sink.export(spans.sessions(5))

    sent = sink.transactions_sent
    assert sent >= 2
    assert sum(total(drops).values()) == 2 * (5 - sent)
    assert set(total(drops)) <= {"network_error"}


def test_refused_connections_count_every_span_once(spans: Spans) -> None:
    drops = DropCounter()
    sink = make_sink(closed_port(), drops)

    assert sink.export(spans.sessions(40, children=2)) is False
    assert sink.flush(1.0) is False
    sink.shutdown()

    assert total(drops) == {"network_error": 120}


def test_a_group_in_flight_at_shutdown_is_counted_once_and_never_again(
    spans: Spans, scripted: list[ScriptedSentry]
) -> None:
    server = scripted_sentry(scripted, ["hang"])
    drops = DropCounter()
    sink = make_sink(server.port, drops, timeout_s=30.0)
    batch = spans.sessions(3)
    exporting = threading.Thread(target=sink.export, args=(batch,))
    exporting.start()
    server.wait_for(1)

    sink.shutdown()
    exporting.join(timeout=10)

    assert not exporting.is_alive()
    assert total(drops) == {"shutdown_timeout": 6}


def test_spans_parked_at_shutdown_are_counted_once(spans: Spans) -> None:
    drops = DropCounter()
    sink = make_sink(closed_port(), drops)
    with spans.tracer.start_as_current_span("open"):
        for index in range(3):
            with spans.tracer.start_as_current_span(f"turn {index}"):
                pass
        assert sink.export(spans.take()) is True

        sink.shutdown()
        sink.shutdown()
        sink.flush(1.0)  # nothing parked is left to send

    assert total(drops) == {"shutdown_timeout": 3}


def test_spans_handed_over_after_shutdown_are_counted(spans: Spans) -> None:
    # The worker leaves a batch the sink is busy with at shutdown to the sink: one whose
    # export starts just after the sink's shutdown must not vanish.
    drops = DropCounter()
    sink = make_sink(closed_port(), drops)
    session = spans.sessions(1, children=1)
    with spans.tracer.start_as_current_span("open root"):
        with spans.tracer.start_as_current_span("child"):
            pass
        orphan = spans.take()
    sink.shutdown()

    sink.export(session + orphan)
    sink.flush(1.0)

    assert sum(total(drops).values()) == 3


def test_parked_subtrees_evicted_by_overflow_are_sent_and_the_rest_flushed(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops, max_parked_spans=5)
    parked: list[ReadableSpan] = []
    roots = []
    for index in range(4):
        root = spans.tracer.start_span(f"open {index}")
        roots.append(root)
        with otel_trace.use_span(root):
            for child in range(3):
                with spans.tracer.start_as_current_span(f"c{index}.{child}"):
                    pass
        parked += spans.take()

    assert sink.export(parked) is True
    # 12 parked, 5 allowed: the buckets idle longest went as transactions of their own.
    evicted = len(otlp_http_recorder.requests)
    assert evicted >= 2
    assert sink.flush(5.0) is True
    assert total(drops) == {}

    sent_ids = []
    for request in otlp_http_recorder.requests:
        [item] = envelope_of(request.content).items
        event = item.payload.json
        sent_ids.append(event["contexts"]["trace"]["span_id"])
        sent_ids += [s["span_id"] for s in event["spans"]]
    assert sorted(sent_ids) == sorted(f"{s.context.span_id:016x}" for s in parked)
    for root in roots:
        root.end()


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


def with_attributes(span: ReadableSpan, attributes: dict[str, Any]) -> ReadableSpan:
    """The span as another processor might hand it on: attributes the SDK never cleaned."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def test_a_value_json_has_no_form_for_is_sent_as_its_text(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    class Verdict:
        def __str__(self) -> str:
            return "approve"

    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops)
    turn, session = spans.sessions(1)
    batch = [
        with_attributes(turn, {"v": Verdict(), "k": (Verdict(),)}),
        with_attributes(session, {"v": Verdict()}),
    ]

    assert sink.export(batch) is True

    [request] = otlp_http_recorder.requests
    event = envelope_of(request.content).items[0].payload.json
    assert event["contexts"]["trace"]["data"] == {"v": "approve"}
    assert event["spans"][0]["data"] == {"v": "approve", "k": ["approve"]}
    assert total(drops) == {}


def test_an_unencodable_first_child_loses_only_itself_when_its_bucket_is_evicted(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops)
    root = spans.tracer.start_span("open")
    with otel_trace.use_span(root):
        for child in range(3):
            with spans.tracer.start_as_current_span(f"c{child}"):
                pass
    first, second, third = spans.take()
    bad = with_attributes(first, {"x": Unprintable()})

    sink.export([bad, second, third])
    sink.flush(5.0)
    root.end()

    assert total(drops) == {"unserializable": 1}
    sent = []
    for request in otlp_http_recorder.requests:
        event = envelope_of(request.content).items[0].payload.json
        sent += [event["contexts"]["trace"]["span_id"]] + [s["span_id"] for s in event["spans"]]
    assert sorted(sent) == sorted(f"{s.context.span_id:016x}" for s in (second, third))


def test_an_unencodable_span_with_children_loses_only_itself(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops)
    root = spans.tracer.start_span("open")
    with (
        otel_trace.use_span(root),
        spans.tracer.start_as_current_span("agent"),
        spans.tracer.start_as_current_span("step"),
    ):
        pass
    step, agent = spans.take()

    sink.export([step, with_attributes(agent, {"x": Unprintable()})])
    sink.flush(5.0)
    root.end()

    assert total(drops) == {"unserializable": 1}
    [request] = otlp_http_recorder.requests
    event = envelope_of(request.content).items[0].payload.json
    assert event["contexts"]["trace"]["span_id"] == f"{step.context.span_id:016x}"
    assert event["spans"] == []


def test_an_unencodable_root_loses_only_itself(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops)
    turn, session = spans.sessions(1)

    sink.export([turn, with_attributes(session, {"x": Unprintable()})])
    sink.flush(5.0)

    assert total(drops) == {"unserializable": 1}
    [request] = otlp_http_recorder.requests
    event = envelope_of(request.content).items[0].payload.json
    assert f"{turn.context.span_id:016x}" in [event["contexts"]["trace"]["span_id"]] + [
        s["span_id"] for s in event["spans"]
    ]


# -- rate limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "limited"),
    [
        ({"X-Sentry-Rate-Limits": "60:error; transaction:org"}, True),
        ({"X-Sentry-Rate-Limits": "60: transaction :org"}, True),
        ({"X-Sentry-Rate-Limits": "60:error:org, 60:transaction:key"}, True),
        ({"X-Sentry-Rate-Limits": "-5:transaction:org"}, False),
        ({"X-Sentry-Rate-Limits": "nan:transaction:org"}, False),
        ({"X-Sentry-Rate-Limits": "abc:transaction:org,::,:"}, False),
        ({"X-Sentry-Rate-Limits": "1e999:transaction:org"}, True),
        ({"X-Sentry-Rate-Limits": "99999999999:transaction:org"}, True),
        ({"Retry-After": "99999999999"}, False),  # only a 429 is held to Retry-After
        ({"X-Sentry-Rate-Limits": "60:error:org"}, False),
    ],
)
def test_odd_rate_limit_headers_never_raise_and_hold_transactions_when_they_mean_to(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder, headers: dict[str, str], limited: bool
) -> None:
    otlp_http_recorder.succeed(headers=headers)
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops)

    assert sink.export(spans.sessions(1)) is True
    assert sink.export(spans.sessions(1)) is (not limited)

    assert len(otlp_http_recorder.requests) == (1 if limited else 2)
    assert total(drops) == ({"rate_limited": 2} if limited else {})


@pytest.mark.parametrize("retry_after", ["-1", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", "1e999"])
def test_a_429_with_an_odd_retry_after_holds_for_a_bounded_time(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder, retry_after: str
) -> None:
    otlp_http_recorder.fail(429, headers={"Retry-After": retry_after})
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops)

    assert sink.export(spans.sessions(1)) is False

    assert total(drops) == {"rate_limited": 2}
    # Held, but not forever: at most the longest limit the sink believes (an hour).
    held_s = sink._limited_until - time.monotonic()
    assert 0 < held_s <= 3600


# -- what goes on the wire ------------------------------------------------------------------


HOSTILE = {
    "t.bytes": b"caf\xc3\xa9\xff",
    "t.nan": float("nan"),
    "t.inf": (1.0, math.inf, -math.inf),
    "t.nested": {"a": [[1, 2], {"b": b"x"}]},
    "t.long": "x" * 100_000,
    "t.surrogate": "lone \ud800 and \udfff",
    "t.pair": "\ud83d\ude00 split pair",
    "t.astral": "\U0001f600 \U00010348",
    'k"e\\y\n\t\u2028': "escapes",
    "t.surrogate.key \udc80": 1,
    "t.control": "\x00\x1f\x7f",
}


def test_hostile_attribute_values_give_an_envelope_sentry_parses(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops, environment="prod \ud800", release="r@1")
    with spans.tracer.start_as_current_span("session \ud800 \U0001f600") as root:
        root.set_attributes(HOSTILE)
        with spans.tracer.start_as_current_span("turn \udfff") as turn:
            turn.set_attributes(HOSTILE)

    assert sink.export(spans.take()) is True

    [request] = otlp_http_recorder.requests
    envelope = envelope_of(request.content)
    assert envelope.headers["trace"]["environment"] == "prod \ufffd"
    assert envelope.headers["trace"]["transaction"] == "session \ufffd \U0001f600"
    [item] = envelope.items
    raw = item.payload.get_bytes()
    assert relay_problems(raw) == []
    event = json.loads(raw)
    assert event["transaction"] == "session \ufffd \U0001f600"
    [span] = event["spans"]
    assert span["description"] == "turn \ufffd"
    data = span["data"]
    assert data["t.surrogate"] == "lone \ufffd and \ufffd"
    assert "t.surrogate.key \ufffd" in data
    assert data["t.pair"] == "\U0001f600 split pair"
    assert data["t.astral"] == "\U0001f600 \U00010348"
    assert data["t.long"] == "x" * 100_000
    assert data["t.bytes"] == "caf\u00e9\ufffd"
    assert (data["t.nan"], data["t.inf"]) == ("NaN", [1.0, "Infinity", "-Infinity"])
    assert data["t.nested"] == {"a": [[1, 2], {"b": "x"}]}
    assert data['k"e\\y\n\t\u2028'] == "escapes"
    assert data["t.control"] == "\x00\x1f\x7f"
    assert total(drops) == {}


def test_environment_and_release_reach_the_header_and_the_event(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops, environment="staging", release="svc@2.0")

    sink.export(spans.sessions(1))

    [request] = otlp_http_recorder.requests
    envelope = envelope_of(request.content)
    dsc = envelope.headers["trace"]
    assert dsc["environment"] == "staging"
    assert dsc["release"] == "svc@2.0"
    assert dsc["public_key"] == KEY
    event = envelope.items[0].payload.json
    assert (event["environment"], event["release"]) == ("staging", "svc@2.0")
    assert relay_problems(envelope.items[0].payload.get_bytes()) == []


def test_long_or_multiline_root_attributes_become_tags_sentry_keeps(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops)
    with spans.tracer.start_as_current_span("session") as root:
        root.set_attribute("agent_trace.conversation_id", "c" * 500)
        root.set_attribute("agent_trace.constitutional_hash", "line one\nline two")

    sink.export(spans.take())

    [request] = otlp_http_recorder.requests
    raw = envelope_of(request.content).items[0].payload.get_bytes()
    assert relay_problems(raw) == []


def test_gzip_only_for_dsns_that_are_not_loopback() -> None:
    drops = DropCounter()
    for host, compressed in [
        ("127.0.0.1:9", False),
        ("[::1]:9", False),
        ("localhost:9", False),
        ("127.0.0.2", False),
        ("o1.ingest.sentry.example", True),
        ("127.example.com", True),
        ("localhost.example.com", True),
    ]:
        poster = FakePoster()
        dsn = SentryDsn.parse(f"https://{KEY}@{host}/3")
        sink = SentryEnvelopeSink(
            dsn, drops, environment=None, release=None, timeout_s=1.0, poster=poster
        )
        sink.export(Spans().sessions(1))
        [body] = poster.bodies
        assert body.startswith(b"\x1f\x8b") is compressed, host
        if compressed:
            envelope_of(gzip.decompress(body))
        assert KEY not in sink.describe()


def test_a_transaction_of_5000_spans_is_one_envelope_sentry_parses(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops)
    batch = spans.sessions(1, children=5000)

    assert sink.export(batch) is True

    [request] = otlp_http_recorder.requests
    [item] = envelope_of(request.content).items
    assert len(item.payload.json["spans"]) == 5000


def test_groups_hold_32_envelopes_or_stop_once_past_a_megabyte(spans: Spans) -> None:
    # How envelopes are grouped is invisible on the wire: a poster of the test's own sees it.
    poster = FakePoster()
    dsn = SentryDsn.parse(f"http://{KEY}@127.0.0.1:9/3")
    sink = SentryEnvelopeSink(
        dsn, DropCounter(), environment=None, release=None, timeout_s=1.0, poster=poster
    )
    for index in range(8):
        with spans.tracer.start_as_current_span(f"s{index}") as root:
            root.set_attribute("blob", "z" * 300_000)
    large = spans.take()

    assert sink.export(large) is True
    assert sink.export(spans.sessions(40)) is True

    assert [len(group) for group in poster.groups] == [4, 4, 32, 8]
    for group in poster.groups:
        assert sum(len(body) for body in group[:-1]) < 1024 * 1024


def test_describe_never_shows_the_key(spans: Spans) -> None:
    drops = DropCounter()
    sink = make_sink(closed_port(), drops)
    sink.export(spans.sessions(1))

    assert KEY not in sink.describe()
    assert KEY not in (sink.last_error or "")
    assert "127.0.0.1" in sink.describe()


# -- fork -----------------------------------------------------------------------------------


def span_ids_sent(recorder: OtlpHttpRecorder) -> list[str]:
    ids = []
    for request in recorder.requests:
        event = envelope_of(request.content).items[0].payload.json
        ids += [event["contexts"]["trace"]["span_id"]] + [s["span_id"] for s in event["spans"]]
    return ids


def test_a_forked_child_sends_its_own_spans_and_leaves_the_parents_parked_ones(
    spans: Spans, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    drops = DropCounter()
    sink = make_sink(otlp_http_recorder.port, drops)
    root = spans.tracer.start_span("open in the parent")
    with otel_trace.use_span(root), spans.tracer.start_as_current_span("parent's turn"):
        pass
    parents = spans.take()
    sink.export(parents)

    pid = os.fork()
    if pid == 0:  # the child: its own session, then flush and shutdown
        code = 1
        try:
            child_drops = DropCounter()
            sink._drops = child_drops
            ok = sink.export(spans.sessions(1)) and sink.flush(5.0)
            sink.shutdown()
            code = 0 if ok and child_drops.snapshot() == {} else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    assert len(otlp_http_recorder.requests) == 1  # the child's session only
    assert sink.flush(5.0) is True
    sent = span_ids_sent(otlp_http_recorder)
    assert f"{parents[0].context.span_id:016x}" in sent
    assert len(sent) == len(set(sent)) == 3
    assert total(drops) == {}
    root.end()


class OutagePoster(FakePoster):
    """Gives no answer (as a refused connection) until `up` is set, then answers 200."""

    def __init__(self) -> None:
        super().__init__()
        self.up = False

    def post_many(self, bodies: list[bytes]) -> list[HttpAnswer | HttpError]:
        if self.up:
            return super().post_many(bodies)
        self.groups.append(list(bodies))
        return [HttpError("refused") for _ in bodies]


def test_while_sentry_does_not_answer_each_batch_sends_one_probe_and_builds_no_more(
    spans: Spans,
) -> None:
    poster = OutagePoster()
    drops = DropCounter()
    dsn = SentryDsn.parse(f"http://{KEY}@127.0.0.1:9/3")
    sink = SentryEnvelopeSink(
        dsn, drops, environment=None, release=None, timeout_s=1.0, poster=poster
    )

    # Up to now Sentry answered: the first batch goes as a group, which gets no answer.
    assert sink.export(spans.sessions(40)) is False
    # From then on each batch tries one envelope, and gives up on the rest without building
    # them.
    assert sink.export(spans.sessions(40)) is False
    assert sink.export(spans.sessions(40)) is False
    assert [len(group) for group in poster.groups] == [32, 1, 1]
    assert total(drops) == {"network_error": 3 * 40 * 2}

    # Back up: the probe is answered, and the rest of its batch goes as groups again.
    poster.up = True
    assert sink.export(spans.sessions(40)) is True
    assert [len(group) for group in poster.groups[3:]] == [1, 32, 7]
    assert total(drops) == {"network_error": 3 * 40 * 2}

"""The OTLP/HTTP sink's own encoder path against the stock exporter's export, as a hostile network
and a careless user would meet them.

`FastHttpExporter` writes the request with `otlp_proto` and posts it through the stock exporter's
private client. Each test runs the same export through our sink and through the stock
`OTLPSpanExporter` at a local recorder, and checks they end the same way: the same result, the
same requests (count, headers, compression, body), the same exporter metrics.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

import agent_trace
from agent_trace.pipeline.sinks import otlp as otlp_sink_module
from agent_trace.pipeline.sinks import otlp_proto
from agent_trace.pipeline.sinks._pacing import PacedBatch
from agent_trace.pipeline.sinks.otlp import OtlpSink, _http_exporter_class
from agent_trace.testing import capture_spans
from tests.backends.otlp_recorder import OtlpHttpRecorder, closed_port
from tests.pipeline.test_otlp_proto import BATCH, make_span

pytestmark = pytest.mark.integration

# How a test builds the exporter under test: ours (through the sink's own factory) or stock.
Make = Callable[..., SpanExporter]


def ours(**kwargs: Any) -> SpanExporter:
    return _http_exporter_class()(**kwargs)


def stock(**kwargs: Any) -> SpanExporter:
    return OTLPSpanExporter(**kwargs)


@pytest.fixture(params=[ours, stock], ids=["ours", "stock"])
def make(request: pytest.FixtureRequest) -> Make:
    maker: Make = request.param
    return maker


@pytest.fixture(autouse=True)
def quiet_exporters(caplog: pytest.LogCaptureFixture) -> None:
    # Failed exports log an ERROR each; the tests read results, not logs.
    caplog.set_level(logging.CRITICAL, logger="opentelemetry")


def export_once(
    make: Make, recorder: OtlpHttpRecorder, batch: Sequence[ReadableSpan], **kwargs: Any
) -> SpanExportResult:
    kwargs.setdefault("timeout", 5.0)
    exporter = make(endpoint=recorder.traces_url, **kwargs)
    try:
        return exporter.export(batch)
    finally:
        exporter.shutdown()


def sink_for(recorder: OtlpHttpRecorder, **headers: str) -> OtlpSink:
    return OtlpSink("otlp", recorder.traces_url, protocol="http", headers=headers, timeout_s=5.0)


# --- The request --------------------------------------------------------------------------------


def test_the_sink_builds_our_exporter(otlp_http_recorder: OtlpHttpRecorder) -> None:
    sink = sink_for(otlp_http_recorder)
    try:
        assert type(sink._exporter).__name__ == "FastHttpExporter"
    finally:
        sink.shutdown()


def test_the_body_is_byte_for_byte_the_stock_serialisation(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    sink = sink_for(otlp_http_recorder)
    try:
        assert sink.export(PacedBatch(BATCH)) is True
    finally:
        sink.shutdown()

    [request] = otlp_http_recorder.requests
    # Byte equality, not only message equality: the size limit is measured on these bytes.
    assert request.content == encode_spans(BATCH).SerializePartialToString()
    assert request.method == "POST"
    assert request.path == "/v1/traces"
    assert request.header("Content-Type") == "application/x-protobuf"


def test_the_body_has_the_stock_length_where_its_field_order_differs(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    # Our Status writes its code before its message, the stock the other way round: the same
    # message and the same length, so the size limit still refuses at the same byte.
    batch = [make_span(status=Status(StatusCode.ERROR, "ValueError: boom")), *BATCH]
    sink = sink_for(otlp_http_recorder)
    try:
        assert sink.export(batch) is True
    finally:
        sink.shutdown()

    [request] = otlp_http_recorder.requests
    assert len(request.content) == len(encode_spans(batch).SerializePartialToString())
    assert request.decoded == encode_spans(batch)


def test_an_empty_batch_posts_an_empty_request_as_the_stock_does(
    make: Make, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    assert export_once(make, otlp_http_recorder, []) is SpanExportResult.SUCCESS

    [request] = otlp_http_recorder.requests
    assert request.content == b""


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"]
)
@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compression_from_the_environment_is_applied(
    make: Make,
    otlp_http_recorder: OtlpHttpRecorder,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    compression: str,
) -> None:
    monkeypatch.setenv(variable, compression)

    assert export_once(make, otlp_http_recorder, BATCH) is SpanExportResult.SUCCESS

    [request] = otlp_http_recorder.requests
    assert request.header("Content-Encoding") == compression
    assert request.body != request.content
    assert request.decoded == encode_spans(BATCH)


def test_an_unknown_compression_sends_uncompressed(
    make: Make, otlp_http_recorder: OtlpHttpRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "brotli")

    assert export_once(make, otlp_http_recorder, BATCH) is SpanExportResult.SUCCESS

    [request] = otlp_http_recorder.requests
    assert request.header("Content-Encoding") is None
    assert request.decoded == encode_spans(BATCH)


def test_headers_from_the_environment_and_the_settings_both_arrive(
    otlp_http_recorder: OtlpHttpRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-env=from%20env,x-both=env")
    sink = sink_for(otlp_http_recorder, **{"X-Both": "settings", "x-tenant": "governance"})
    try:
        assert sink.export(BATCH) is True
    finally:
        sink.shutdown()

    [request] = otlp_http_recorder.requests
    assert request.header("x-env") == "from env"
    # The settings win over the environment, as in the stock exporter.
    assert request.header("x-both") == "settings"
    assert request.header("x-tenant") == "governance"
    assert request.header("Content-Type") == "application/x-protobuf"


def test_certificate_settings_from_the_environment_reach_the_transport(
    make: Make, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", str(ca))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(cert))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(key))

    exporter: Any = make(endpoint="https://127.0.0.1:1/v1/traces")
    try:
        session = exporter._client._transport._session
        assert session.verify == str(ca)
        assert session.cert == (str(cert), str(key))
    finally:
        exporter.shutdown()


# --- Failures and retries -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_a_transient_status_with_retry_after_is_retried_until_the_retries_run_out(
    make: Make, otlp_http_recorder: OtlpHttpRecorder, status: int
) -> None:
    # Retry-After: 0 makes the client retry at once, its six attempts in a few milliseconds.
    otlp_http_recorder.fail(status, retry_after_s=0)

    assert export_once(make, otlp_http_recorder, BATCH, timeout=30.0) is SpanExportResult.FAILURE

    requests = otlp_http_recorder.requests
    assert len(requests) == 6
    assert all(request.decoded == encode_spans(BATCH) for request in requests)


def test_a_transient_failure_then_success_is_a_success(
    make: Make, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    otlp_http_recorder.fail(503, retry_after_s=1)
    exporter = make(endpoint=otlp_http_recorder.traces_url, timeout=30.0)

    def recover() -> None:
        otlp_http_recorder.wait_for_requests(1)
        otlp_http_recorder.succeed()

    helper = threading.Thread(target=recover)
    helper.start()
    try:
        assert exporter.export(BATCH) is SpanExportResult.SUCCESS
    finally:
        helper.join()
        exporter.shutdown()
    assert len(otlp_http_recorder.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500])
def test_a_permanent_status_is_not_retried(
    make: Make, otlp_http_recorder: OtlpHttpRecorder, status: int
) -> None:
    otlp_http_recorder.fail(status, retry_after_s=0)

    assert export_once(make, otlp_http_recorder, BATCH) is SpanExportResult.FAILURE

    assert len(otlp_http_recorder.requests) == 1


def test_a_receiver_that_never_answers_fails_within_the_timeout(
    make: Make, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    otlp_http_recorder.hang()
    started = time.monotonic()

    result = export_once(make, otlp_http_recorder, BATCH, timeout=0.5)

    assert result is SpanExportResult.FAILURE
    assert time.monotonic() - started < 20.0
    assert otlp_http_recorder.requests


def test_a_shutdown_during_a_retry_wait_ends_the_export(
    make: Make, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    otlp_http_recorder.fail(503, retry_after_s=60)
    exporter = make(endpoint=otlp_http_recorder.traces_url, timeout=120.0)
    results: list[SpanExportResult] = []
    export = threading.Thread(target=lambda: results.append(exporter.export(BATCH)))
    export.start()
    otlp_http_recorder.wait_for_requests(1)

    exporter.shutdown()
    export.join(timeout=30.0)

    assert not export.is_alive()
    assert results == [SpanExportResult.FAILURE]
    assert len(otlp_http_recorder.requests) == 1


def test_a_refused_connection_is_a_failure(make: Make) -> None:
    exporter = make(endpoint=f"http://127.0.0.1:{closed_port()}/v1/traces", timeout=1.0)
    try:
        assert exporter.export(BATCH) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()


# --- Batches the fast path hands to the stock export ----------------------------------------------


def test_an_export_after_shutdown_sends_nothing(
    make: Make, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    exporter = make(endpoint=otlp_http_recorder.traces_url, timeout=5.0)
    exporter.shutdown()

    assert exporter.export(BATCH) is SpanExportResult.FAILURE

    assert otlp_http_recorder.requests == []


def test_a_sink_export_after_shutdown_is_false(otlp_http_recorder: OtlpHttpRecorder) -> None:
    sink = sink_for(otlp_http_recorder)
    sink.shutdown()

    assert sink.export(BATCH) is False

    assert otlp_http_recorder.requests == []


def stock_size() -> int:
    return len(encode_spans(BATCH).SerializePartialToString())


@pytest.mark.parametrize(
    ("limit", "sent"),
    [
        (lambda: stock_size() - 1, False),
        (lambda: 1, False),
        (stock_size, True),
        (lambda: 0, True),
        (lambda: -5, True),
    ],
    ids=["one-byte-over", "far-over", "exactly-at", "zero-disables", "negative-disables"],
)
def test_the_size_limit_is_applied_at_the_same_byte(
    make: Make, otlp_http_recorder: OtlpHttpRecorder, limit: Callable[[], int], sent: bool
) -> None:
    result = export_once(make, otlp_http_recorder, BATCH, max_request_size=limit())

    assert (result is SpanExportResult.SUCCESS) is sent
    assert len(otlp_http_recorder.requests) == int(sent)


def test_a_batch_over_the_size_limit_is_refused_with_a_warning_giving_both_sizes(
    make: Make,
    otlp_http_recorder: OtlpHttpRecorder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    caplog.set_level(logging.WARNING, logger=logger)
    # The sink's filter lets each message through once a minute: forget earlier tests' ones.
    monkeypatch.setattr(otlp_sink_module._filter, "_last", {})

    result = export_once(make, otlp_http_recorder, BATCH, max_request_size=stock_size() - 1)

    assert result is SpanExportResult.FAILURE
    # One warning on the exporter's logger (its once-a-minute filter applies), with the size
    # of the request and the limit.
    [record] = [r for r in caplog.records if r.name == logger]
    message = record.getMessage()
    assert f"{stock_size()} bytes" in message
    assert f"{stock_size() - 1} bytes" in message


def test_a_batch_over_the_size_limit_is_not_encoded_a_second_time(
    otlp_http_recorder: OtlpHttpRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import opentelemetry.exporter.otlp.proto.http.trace_exporter as stock_module

    stock_encodings: list[int] = []

    def spy(spans: Sequence[ReadableSpan]) -> Any:
        stock_encodings.append(len(spans))
        return encode_spans(spans)

    monkeypatch.setattr(stock_module, "encode_spans", spy)

    result = export_once(ours, otlp_http_recorder, BATCH, max_request_size=10)

    assert result is SpanExportResult.FAILURE
    assert stock_encodings == []
    assert otlp_http_recorder.requests == []


def test_a_batch_our_encoder_refuses_is_sent_by_the_stock_encoder(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    # A bytes name: the stock message takes UTF-8 bytes for a string; ours refuses it.
    batch = [make_span(b"bytes name"), *BATCH]  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        otlp_proto.encode_request(batch)

    assert export_once(ours, otlp_http_recorder, PacedBatch(batch)) is SpanExportResult.SUCCESS

    [request] = otlp_http_recorder.requests
    assert request.decoded == encode_spans(batch)
    assert request.spans[0].name == "bytes name"


def test_a_batch_both_encoders_refuse_sends_nothing(
    make: Make, otlp_http_recorder: OtlpHttpRecorder
) -> None:
    batch = [*BATCH, make_span(kind="server")]  # type: ignore[arg-type]

    assert export_once(make, otlp_http_recorder, batch) is SpanExportResult.FAILURE

    assert otlp_http_recorder.requests == []


# --- The exporter's own metrics -----------------------------------------------------------------


def exporter_metrics(reader: InMemoryMetricReader) -> dict[tuple[str, frozenset[Any]], Any]:
    """Data points summed by metric and attributes, less the component name (one per exporter)."""
    points: dict[tuple[str, frozenset[Any]], Any] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    attributes = {
                        k: v
                        for k, v in (point.attributes or {}).items()
                        if k != "otel.component.name"
                    }
                    # A counter's sum, or a histogram's count of operations.
                    value = point.value if isinstance(point, NumberDataPoint) else point.count
                    key = (metric.name, frozenset(attributes.items()))
                    points[key] = points.get(key, 0) + value
    return points


def metrics_of_exports(
    make: Make,
    recorder: OtlpHttpRecorder,
    monkeypatch: pytest.MonkeyPatch,
    steps: Sequence[tuple[Callable[[], None], Sequence[ReadableSpan], dict[str, Any]]],
) -> dict[tuple[str, frozenset[Any]], Any]:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        for prepare, batch, kwargs in steps:
            prepare()
            export_once(make, recorder, batch, meter_provider=provider, **kwargs)
        return exporter_metrics(reader)
    finally:
        provider.shutdown()


def test_exporter_metrics_are_those_of_the_stock_export(
    otlp_http_recorder: OtlpHttpRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = otlp_http_recorder
    refused_by_ours = [make_span(b"bytes name")]  # type: ignore[arg-type]
    refused_by_both = [make_span(kind="server")]  # type: ignore[arg-type]
    steps: list[tuple[Callable[[], None], Sequence[ReadableSpan], dict[str, Any]]] = [
        (recorder.succeed, BATCH, {}),
        (recorder.succeed, PacedBatch(BATCH[:2]), {}),
        (lambda: recorder.fail(400), BATCH, {}),
        (lambda: recorder.fail(503, retry_after_s=0), BATCH[:1], {}),
        (recorder.succeed, BATCH, {"max_request_size": 10}),
        (recorder.succeed, refused_by_ours, {}),
        (recorder.succeed, refused_by_both, {}),
    ]

    ours_points = metrics_of_exports(ours, recorder, monkeypatch, steps)
    stock_points = metrics_of_exports(stock, recorder, monkeypatch, steps)

    assert ours_points == stock_points
    # The stock client reports an HTTP status without an error object: no error.type for it.
    errors = {dict(attrs).get("error.type") for _, attrs in ours_points}
    assert errors == {None, "RequestPayloadTooLargeError", "KeyError"}
    statuses = {dict(attrs).get("http.response.status_code") for _, attrs in ours_points}
    assert {400, 503} <= statuses


# --- Fork ---------------------------------------------------------------------------------------


# Run in an interpreter of its own: pytest's process has threads and other tests' fork hooks (an
# SDK TracerProvider's), and a child forked while one of them holds a lock can hang.
FORK_SCRIPT = """
import os, sys, urllib.parse
import psutil
from tests.pipeline.test_otlp_proto import BATCH
from agent_trace.pipeline.sinks.otlp import OtlpSink

port = urllib.parse.urlsplit(sys.argv[1]).port

def open_to_recorder():
    me = psutil.Process()
    connections = getattr(me, "net_connections", me.connections)(kind="tcp")
    return sum(1 for c in connections if c.raddr and c.raddr.port == port)

sink = OtlpSink("otlp", sys.argv[1], protocol="http", headers={}, timeout_s=5.0)
assert sink.export(BATCH[:1])  # the parent's keep-alive connection is now open
assert open_to_recorder() == 1
parent_exporter = sink._exporter
pid = os.fork()
if pid == 0:
    code = 3
    try:
        # The child closed its copy of the parent's connection (the parent's stays open).
        closed = open_to_recorder() == 0
        fresh = sink._exporter is not parent_exporter
        fast = type(sink._exporter).__name__ == "FastHttpExporter"
        code = 0 if closed and fresh and fast and sink.export(BATCH) else 2
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert sink.export(BATCH[1:])  # the parent's exporter still works after the child's
sink.shutdown()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_exports_through_a_fresh_exporter_of_our_own(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, otlp_http_recorder.traces_url],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    requests = otlp_http_recorder.requests
    assert [request.decoded for request in requests] == [
        encode_spans(BATCH[:1]),
        encode_spans(BATCH),
        encode_spans(BATCH[1:]),
    ]


# --- Through the pipeline -----------------------------------------------------------------------


def run_sessions(count: int) -> None:
    for i in range(count):
        with agent_trace.session("review", session_id=f"s{i}") as s, s.turn("ethics"):
            pass


def otlp_drops() -> int:
    return sum(n for (sink, _), n in agent_trace.dropped_spans().items() if sink == "otlp")


@pytest.mark.parametrize("export_process", [False, True], ids=["threads", "export-process"])
def test_spans_a_receiver_refuses_are_counted_as_dropped(
    otlp_http_recorder: OtlpHttpRecorder, export_process: bool
) -> None:
    otlp_http_recorder.fail(400)
    before = otlp_drops()

    with capture_spans(
        otlp_endpoint=otlp_http_recorder.traces_url,
        otlp_protocol="http",
        export_process=export_process,
    ) as captured:
        run_sessions(3)
        assert agent_trace.force_flush(timeout_s=10.0) is False
        sent = len(captured.spans)

    assert sent > 0
    assert otlp_drops() - before == sent
    assert sum(len(request.spans) for request in otlp_http_recorder.requests) == sent


def test_spans_a_receiver_accepts_are_not_counted_as_dropped(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    before = otlp_drops()

    with capture_spans(
        otlp_endpoint=otlp_http_recorder.traces_url, otlp_protocol="http", export_process=False
    ) as captured:
        run_sessions(3)
        assert agent_trace.force_flush(timeout_s=10.0) is True
        sent = {span.context.span_id.to_bytes(8, "big") for span in captured.spans}

    assert otlp_drops() == before
    assert {span.span_id for span in otlp_http_recorder.spans()} == sent


def test_sentry_in_otlp_mode_posts_our_encoding_with_its_auth_header(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    dsn = f"http://publickey@127.0.0.1:{otlp_http_recorder.port}/42"

    with capture_spans(
        sentry_dsn=dsn, sentry_mode="otlp", alert_policy=False, export_process=False
    ) as captured:
        run_sessions(1)
        assert agent_trace.force_flush(timeout_s=10.0) is True
        sent = {span.context.span_id.to_bytes(8, "big") for span in captured.spans}

    requests = [r for r in otlp_http_recorder.requests if "otlp" in r.path]
    assert requests
    assert all(r.path == "/api/42/integration/otlp/v1/traces/" for r in requests)
    assert all("sentry_key=publickey" in (r.header("X-Sentry-Auth") or "") for r in requests)
    assert {span.span_id for r in requests for span in r.spans} == sent

"""The test backends themselves, checked with the raw OpenTelemetry and Sentry SDKs.

If these fail, an integration test of agent-trace that uses the same fixtures cannot be
believed either way.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import cast

import grpc
import pytest
import sentry_sdk
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tests.backends._support import LOOPBACK, listening_sockets
from tests.backends.jaeger import Jaeger, iter_spans, process_tags, span_tags
from tests.backends.otlp_recorder import (
    OtlpGrpcRecorder,
    OtlpHttpRecorder,
    attributes_of,
    closed_port,
)
from tests.backends.relay import normalization_problems
from tests.backends.spotlight import Spotlight, parse_envelope

pytestmark = pytest.mark.integration


def _provider(service: str, exporter: SpanExporter) -> TracerProvider:
    # A provider of the test's own, never the global one: nothing else in the process
    # (agent-trace included) may see or send these spans.
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _send_one_span(provider: TracerProvider, name: str, **attributes: str | int) -> str:
    with provider.get_tracer("harness").start_as_current_span(name, attributes=attributes) as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id


# --- Jaeger ---------------------------------------------------------------------------------


def test_jaeger_reads_back_a_grpc_span_by_id_service_and_tag(jaeger: Jaeger) -> None:
    service = f"harness-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex
    exporter = GrpcSpanExporter(endpoint=jaeger.otlp_grpc_endpoint, insecure=True)

    trace_id = _send_one_span(_provider(service, exporter), "probe grpc", **{"harness.run": run_id})

    trace = jaeger.wait_for_trace(trace_id)
    [span] = iter_spans([trace])
    assert span["operationName"] == "probe grpc"
    assert span_tags(span)["harness.run"] == run_id
    assert span["process"]["serviceName"] == service
    assert process_tags(span)["telemetry.sdk.language"] == "python"
    assert service in jaeger.services()
    assert [t["traceID"] for t in jaeger.find_traces(service)] == [trace_id]
    assert [t["traceID"] for t in jaeger.find_traces(service, {"harness.run": run_id})] == [
        trace_id
    ]
    assert jaeger.find_traces(service, {"harness.run": "some-other-run"}) == []


def test_jaeger_takes_otlp_http_and_waits_for_spans_by_tag(jaeger: Jaeger) -> None:
    service = f"harness-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex
    exporter = HttpSpanExporter(endpoint=jaeger.otlp_http_traces_url)

    trace_id = _send_one_span(_provider(service, exporter), "probe http", **{"harness.run": run_id})

    [span] = jaeger.wait_for_spans(service, 1, {"harness.run": run_id})
    assert span["traceID"] == trace_id
    assert span["operationName"] == "probe http"


def test_jaeger_wait_for_trace_gives_up_at_its_deadline(jaeger: Jaeger) -> None:
    started = time.monotonic()

    with pytest.raises(TimeoutError, match="has 0 of 1 spans"):
        jaeger.wait_for_trace(uuid.uuid4().hex, timeout_s=0.5)

    assert 0.5 <= time.monotonic() - started < 3.0


def test_jaeger_restarts_on_the_same_ports_with_empty_storage(jaeger: Jaeger) -> None:
    service = f"harness-{uuid.uuid4().hex[:8]}"
    ports_before, pid_before = jaeger.ports, jaeger.pid
    exporter = GrpcSpanExporter(endpoint=jaeger.otlp_grpc_endpoint, insecure=True)
    jaeger.wait_for_trace(_send_one_span(_provider(service, exporter), "before restart"))

    jaeger.restart()

    assert jaeger.ports == ports_before
    assert jaeger.pid != pid_before
    assert service not in jaeger.services()
    exporter = GrpcSpanExporter(endpoint=jaeger.otlp_grpc_endpoint, insecure=True)
    trace_id = _send_one_span(_provider(service, exporter), "after restart")
    assert jaeger.wait_for_trace(trace_id)["spans"][0]["operationName"] == "after restart"


# --- Spotlight and Relay --------------------------------------------------------------------


@pytest.fixture
def sentry_to_spotlight(spotlight: Spotlight) -> Iterator[Spotlight]:
    """The raw Sentry SDK sending to Spotlight, without integrations that patch the process."""
    sentry_sdk.init(
        dsn=spotlight.dsn,
        traces_sample_rate=1.0,
        default_integrations=False,
        auto_enabling_integrations=False,
    )
    yield spotlight
    sentry_sdk.get_client().close(timeout=2.0)
    sentry_sdk.get_global_scope().set_client(None)


def test_spotlight_receives_a_transaction_that_relay_accepts(
    sentry_to_spotlight: Spotlight,
) -> None:
    with (
        sentry_sdk.start_transaction(name="harness transaction", op="harness.test") as tx,
        sentry_sdk.start_span(op="harness.child", name="child work"),
    ):
        pass
    sentry_sdk.flush(timeout=5.0)

    [transaction] = sentry_to_spotlight.wait_for_transactions(1)
    assert transaction["transaction"] == "harness transaction"
    assert transaction["contexts"]["trace"]["trace_id"] == tx.trace_id
    assert [span["op"] for span in transaction["spans"]] == ["harness.child"]
    assert normalization_problems(transaction) == []


def test_spotlight_receives_an_error_event_that_relay_accepts(
    sentry_to_spotlight: Spotlight,
) -> None:
    try:
        raise ValueError("harness failure")
    except ValueError:
        event_id = sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=5.0)

    [event] = sentry_to_spotlight.wait_for_error_events(1)
    assert event["event_id"] == event_id
    [exception] = event["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("ValueError", "harness failure")
    assert normalization_problems(event) == []


def test_spotlight_stream_matches_the_bytes_the_sdk_sent(sentry_to_spotlight: Spotlight) -> None:
    sentry_sdk.capture_message("harness message")
    sentry_sdk.flush(timeout=5.0)
    [envelope] = sentry_to_spotlight.wait_for(lambda envs: len(envs) >= 1)

    sent = parse_envelope(sentry_to_spotlight.raw_envelope(envelope))

    assert envelope.header == sent.header
    assert [(i.header, i.payload) for i in envelope.items] == [
        (i.header, i.payload) for i in sent.items
    ]


def test_spotlight_clear_empties_its_buffer(sentry_to_spotlight: Spotlight) -> None:
    sentry_sdk.capture_message("to be cleared")
    sentry_sdk.flush(timeout=5.0)
    sentry_to_spotlight.wait_for_error_events(1)

    sentry_to_spotlight.clear()

    assert sentry_to_spotlight.envelopes() == []


def test_relay_reports_what_sentry_would_reject() -> None:
    now = time.time()
    backwards = {
        "type": "transaction",
        "transaction": "ends before it starts",
        "start_timestamp": now,
        "timestamp": now - 1.0,
        "contexts": {"trace": {"trace_id": uuid.uuid4().hex, "span_id": uuid.uuid4().hex[:16]}},
    }

    [problem] = normalization_problems(backwards)
    assert "end timestamp is smaller than start timestamp" in problem["reason"]
    assert normalization_problems({"message": "m", "not_a_field": 1}) == [
        {"type": "invalid_attribute", "name": "not_a_field"}
    ]
    [future] = normalization_problems({"message": "m", "timestamp": now + 3600})
    assert future["type"] == "future_timestamp"


# --- OTLP recorders -------------------------------------------------------------------------


def test_http_recorder_keeps_path_headers_and_decoded_spans(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    exporter = HttpSpanExporter(
        endpoint=otlp_http_recorder.traces_url, headers={"x-harness": "yes"}
    )

    _send_one_span(_provider("recorded", exporter), "recorded span", answer=42)

    [request] = otlp_http_recorder.wait_for_requests(1)
    assert (request.method, request.path) == ("POST", "/v1/traces")
    assert request.header("content-type") == "application/x-protobuf"
    assert request.header("X-Harness") == "yes"
    [span] = request.spans
    assert span.name == "recorded span"
    assert attributes_of(span) == {"answer": 42}


def test_http_recorder_failure_status_fails_the_export(
    otlp_http_recorder: OtlpHttpRecorder,
) -> None:
    otlp_http_recorder.fail(400, "bad on purpose")
    exporter = HttpSpanExporter(endpoint=otlp_http_recorder.traces_url, timeout=5)
    provider = TracerProvider()
    with provider.get_tracer("harness").start_as_current_span("refused") as span:
        pass
    # What the SDK's tracer hands out is its own span class, a ReadableSpan.
    spans = [cast(ReadableSpan, span)]

    # 400 is not retryable: the exporter reports failure at once.
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(otlp_http_recorder.requests) == 1
    exporter.shutdown()  # type: ignore[no-untyped-call]


def test_grpc_recorder_keeps_metadata_and_decoded_spans(
    otlp_grpc_recorder: OtlpGrpcRecorder,
) -> None:
    exporter = GrpcSpanExporter(
        endpoint=otlp_grpc_recorder.endpoint, insecure=True, headers={"x-harness": "yes"}
    )

    _send_one_span(_provider("recorded", exporter), "recorded span", answer=42)

    [call] = otlp_grpc_recorder.wait_for_calls(1)
    assert call.metadata_value("x-harness") == "yes"
    assert "OTel-OTLP-Exporter-Python" in str(call.metadata_value("user-agent"))
    assert [span.name for span in call.spans] == ["recorded span"]
    assert attributes_of(call.spans[0]) == {"answer": 42}


def test_hanging_http_recorder_never_answers(otlp_http_recorder: OtlpHttpRecorder) -> None:
    otlp_http_recorder.hang()
    connection = http.client.HTTPConnection(LOOPBACK, otlp_http_recorder.port, timeout=0.3)
    started = time.monotonic()

    connection.request("POST", "/v1/traces", body=b"", headers={"Content-Length": "0"})
    with pytest.raises(TimeoutError):
        connection.getresponse()

    assert time.monotonic() - started < 2.0
    assert len(otlp_http_recorder.wait_for_requests(1)) == 1
    connection.close()


def test_hanging_grpc_recorder_never_answers(otlp_grpc_recorder: OtlpGrpcRecorder) -> None:
    otlp_grpc_recorder.hang()
    with grpc.insecure_channel(f"{LOOPBACK}:{otlp_grpc_recorder.port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]

        with pytest.raises(grpc.RpcError) as raised:
            stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=0.3)

    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(otlp_grpc_recorder.calls) == 1


def test_closed_port_refuses_connections() -> None:
    port = closed_port()

    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(LOOPBACK, port, timeout=1.0).connect()


# --- loopback only --------------------------------------------------------------------------


def test_servers_listen_on_their_loopback_ports_only(jaeger: Jaeger, spotlight: Spotlight) -> None:
    assert jaeger.pid is not None and spotlight.pid is not None

    jaeger_sockets = listening_sockets(jaeger.pid)
    spotlight_sockets = listening_sockets(spotlight.pid)

    assert {(s.protocol, s.address, s.port) for s in jaeger_sockets} == {
        ("tcp", LOOPBACK, port) for port in vars(jaeger.ports).values()
    }
    assert {(s.protocol, s.address, s.port) for s in spotlight_sockets} == {
        ("tcp", LOOPBACK, spotlight.port)
    }


def test_ss_sees_no_wildcard_listener_of_ours(jaeger: Jaeger, spotlight: Spotlight) -> None:
    # A second opinion from outside the process tree psutil walks.
    assert shutil.which("ss"), "iproute2's ss is missing: run `bash tests/backends/setup.sh`"
    output = subprocess.run(
        ["ss", "-H", "-ltunp"], capture_output=True, text=True, check=True
    ).stdout
    ours = [
        line
        for line in output.splitlines()
        if f"pid={jaeger.pid}," in line or f"pid={spotlight.pid}," in line
    ]

    assert ours
    local_addresses = [line.split()[4] for line in ours]
    assert all(address.startswith(f"{LOOPBACK}:") for address in local_addresses), ours

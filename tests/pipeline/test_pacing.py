"""Export threads pace their encoding; what they encode is exactly what they were given."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from agent_trace.pipeline.sinks._pacing import PacedBatch
from agent_trace.pipeline.sinks.otlp_json import encode_request


def finished_spans(count: int) -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("test")
    spans = []
    for i in range(count):
        span = tracer.start_span(f"span {i}", attributes={"i": i, "text": "x" * i})
        span.end()
        spans.append(span)
    return spans


def test_a_paced_batch_is_the_same_sequence() -> None:
    spans = finished_spans(50)
    paced = PacedBatch(spans)

    assert len(paced) == 50
    assert list(paced) == spans
    assert list(paced) == spans  # iterable again, as exporters that retry iterate twice
    assert paced[3] is spans[3]
    assert list(paced[10:12]) == spans[10:12]


def test_the_otlp_encoding_of_a_paced_batch_is_unchanged() -> None:
    spans = finished_spans(300)

    paced = encode_spans(PacedBatch(spans)).SerializeToString(deterministic=True)

    assert paced == encode_spans(spans).SerializeToString(deterministic=True)
    assert encode_request(PacedBatch(spans)) == encode_request(spans)

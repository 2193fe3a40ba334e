"""In-process fixtures for the FastAPI and httpx integrations: spans captured in memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import trace

from agent_trace import _runtime
from agent_trace.testing import CapturedSpans, capture_spans

HASH = "a1b2c3d4e5f60718"


@dataclass
class SentryEvent:
    exception: BaseException
    trace_id: int
    span_id: int
    tags: dict[str, str]


@dataclass
class RecordingSentry:
    """Stands in for the pipeline's Sentry client: keeps each error event it is asked to send.

    The real client is exercised against Spotlight in tests/integration_fastapi/.
    """

    events: list[SentryEvent] = field(default_factory=list)

    def capture_exception(
        self, exc: BaseException, span: trace.Span, tags: Any, fingerprint: Any = None
    ) -> None:
        ctx = span.get_span_context()
        self.events.append(SentryEvent(exc, ctx.trace_id, ctx.span_id, dict(tags)))

    def close(self, timeout_s: float) -> bool:
        return True

    def flush(self, timeout_s: float) -> bool:
        return True


@pytest.fixture
def captured() -> Iterator[CapturedSpans]:
    """agent-trace configured with the constitution hash HASH, spans kept in memory."""
    with capture_spans("agent-service", constitution_hash=HASH) as spans:
        yield spans


@pytest.fixture
def sentry(captured: CapturedSpans) -> RecordingSentry:
    recorder = RecordingSentry()
    pipeline = _runtime.current()
    assert pipeline is not None
    pipeline.sentry = recorder
    return recorder

"""One sampler, one scrubbing step, then fan-out: every sink gets the same spans."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan

import agent_trace
from agent_trace.testing import capture_spans
from agent_trace.tracefile import iter_spans


class QueuedRecordingSink:
    """A sink fed through the pipeline's own queue and export thread, like the remote ones."""

    name = "recording"

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        with self._lock:
            self.spans.extend(spans)
            self.threads.add(threading.current_thread().name)
        return True

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None

    def describe(self) -> str:
        return "recording"


def test_every_sink_receives_the_same_scrubbed_span_objects(tmp_path: Path) -> None:
    queued = QueuedRecordingSink()
    path = tmp_path / "traces.jsonl"

    with capture_spans(local_file=True, local_path=path, _extra_sinks=[queued]) as captured:
        with agent_trace.session("review", api_token="tok-0123456789") as s, s.turn("ethics"):
            s.set_attribute("agent_trace.note", "reach me at bob@example.org")
        assert agent_trace.force_flush(timeout_s=5.0) is True
        in_memory = captured.spans

    # Scrubbed once: the queued sink gets the very objects the synchronous one got.
    assert len(queued.spans) == len(in_memory) == 2
    assert all(a is b for a, b in zip(queued.spans, in_memory, strict=True))
    assert queued.threads == {"agent-trace-recording"}

    root = captured.one("invoke_workflow review")
    assert root.attributes["agent_trace.session.api_token"] == "[REDACTED]"
    assert "bob@example.org" not in root.attributes["agent_trace.note"]
    from_file = {r.span_id: r for r in iter_spans(path, strict=True)}
    for span in in_memory:
        record = from_file[f"{span.context.span_id:016x}"]
        assert record.attributes == {
            k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()
        }


def test_sampling_keeps_the_same_traces_in_every_sink(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    sessions = 400

    with capture_spans(local_file=True, local_path=path, sample_rate=0.5) as captured:
        for i in range(sessions):
            with agent_trace.session("sampled", session_id=f"s{i}") as s:
                with s.turn("ethics"):
                    pass
                with s.consensus_round("majority") as rnd:
                    rnd.vote("ethics", "approve")
        assert agent_trace.force_flush(timeout_s=10.0) is True
        memory_spans = captured.spans

    memory_traces = {f"{s.context.trace_id:032x}" for s in memory_spans}
    file_spans = list(iter_spans(path, strict=True))
    file_traces = {r.trace_id for r in file_spans}

    assert memory_traces == file_traces
    assert {f"{s.context.span_id:016x}" for s in memory_spans} == {r.span_id for r in file_spans}
    # Ratio sampling on random trace ids: about half, and never all-or-nothing.
    assert 0.35 * sessions < len(memory_traces) < 0.65 * sessions
    # A kept trace is kept whole: parent-based sampling never splits a session.
    assert len(memory_spans) == 4 * len(memory_traces)


def test_sample_rate_zero_sends_nothing_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    queued = QueuedRecordingSink()

    with capture_spans(
        local_file=True, local_path=path, sample_rate=0.0, _extra_sinks=[queued]
    ) as captured:
        for _ in range(20):
            with agent_trace.session("dropped") as s, s.turn("a"):
                pass
        assert agent_trace.force_flush(timeout_s=5.0) is True
        assert captured.spans == []

    assert queued.spans == []
    assert not path.exists() or path.read_text() == ""

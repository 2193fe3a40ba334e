"""The local file sink, read back with `agent_trace.tracefile`, against what the pipeline sent.

The in-memory sink of the testing kit receives the very span objects the other sinks receive,
so it is the reference: the file must hold the same spans, ids, names and attributes.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

import agent_trace
from agent_trace.testing import capture_spans
from agent_trace.tracefile import SpanRecord, iter_spans

HASH = "cdd01ef066bc6cf2"
KIND = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3}


def run_coordination() -> None:
    with agent_trace.session(
        "ethical_review", session_id="s-1", agents=["ethics", "legal"], complexity=0.5
    ) as s:
        with s.turn("ethics", role="reviewer") as turn:
            turn.set_attribute("agent_trace.turn.tokens", 1234)
            turn.set_attribute("app.password", "hunter2")
            turn.set_attribute("agent_trace.note", "mail jane@example.org")
            agent_trace.monitor_performance_target("turn_ms", 100.0, 12.5)
        with s.turn("legal", remote=True):
            pass
        with s.consensus_round("weighted_vote", participants=["ethics", "legal"]) as rnd:
            rnd.vote("ethics", "approve", weight=2.0, confidence=0.9)
            rnd.vote("legal", "reject")
        with s.policy_check("privacy") as check:
            check.violation("pii", severity="high")
        try:
            with s.escalate("deadlock"):
                raise agent_trace.ConstitutionalViolationError("x", "privacy")
        except agent_trace.ConstitutionalViolationError:
            s.set_outcome("blocked")


def expected_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def assert_same_span(record: SpanRecord, span: ReadableSpan) -> None:
    assert record.trace_id == f"{span.context.trace_id:032x}"
    assert record.span_id == f"{span.context.span_id:016x}"
    expected_parent = None if span.parent is None else f"{span.parent.span_id:016x}"
    assert record.parent_span_id == expected_parent
    assert record.name == span.name
    assert record.kind == KIND[span.kind]
    assert record.start_ns == span.start_time
    assert record.end_ns == span.end_time
    assert record.status_code == span.status.status_code.value
    assert record.attributes == {k: expected_value(v) for k, v in span.attributes.items()}
    assert [e.name for e in record.events] == [e.name for e in span.events]
    for read, sent in zip(record.events, span.events, strict=True):
        assert read.time_ns == sent.timestamp
        assert read.attributes == {k: expected_value(v) for k, v in sent.attributes.items()}


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    return tmp_path / "traces.jsonl"


def capture_with_file(path: Path, **kwargs: Any) -> Any:
    return capture_spans(
        "file-test", local_file=True, local_path=path, constitution_hash=HASH, **kwargs
    )


def test_file_holds_exactly_the_spans_the_pipeline_sent(trace_file: Path) -> None:
    with capture_with_file(trace_file) as captured:
        run_coordination()
        sent = captured.spans
        assert agent_trace.force_flush(timeout_s=5.0) is True

    with iter_spans(trace_file, strict=True) as stream:
        records = list(stream)

    assert len(records) == len(sent) == 8
    by_id = {r.span_id: r for r in records}
    for span in sent:
        assert_same_span(by_id[f"{span.context.span_id:016x}"], span)
    assert stream.stats.skipped_lines == 0


def test_file_holds_the_scrubbed_values(trace_file: Path) -> None:
    with capture_with_file(trace_file):
        run_coordination()

    [turn] = [r for r in iter_spans(trace_file, strict=True) if r.name == "invoke_agent ethics"]
    assert turn.attributes["app.password"] == "[REDACTED]"
    assert "jane@example.org" not in turn.attributes["agent_trace.note"]
    assert turn.attributes["agent_trace.turn.tokens"] == 1234
    assert "hunter2" not in trace_file.read_text()


def test_every_line_is_one_otlp_json_export_request(trace_file: Path) -> None:
    with capture_with_file(trace_file, resource_attributes={"team": "governance"}):
        run_coordination()

    lines = trace_file.read_text().splitlines()
    assert lines
    for line in lines:
        request = json.loads(line)
        assert set(request) == {"resourceSpans"}
        for resource_spans in request["resourceSpans"]:
            resource = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
            assert resource["service.name"] == {"stringValue": "file-test"}
            assert resource["team"] == {"stringValue": "governance"}
            for scope_spans in resource_spans["scopeSpans"]:
                assert scope_spans["scope"]["name"] == "agent_trace"
                for span in scope_spans["spans"]:
                    assert len(span["traceId"]) == 32 and span["traceId"] == span["traceId"].lower()
                    assert len(span["spanId"]) == 16
                    assert span["startTimeUnixNano"].isdigit()
                    assert span["endTimeUnixNano"].isdigit()
                    assert span["kind"] in (1, 3)
                    assert span["status"]["code"] in (0, 2)


def test_values_are_typed_as_otlp_json_says(trace_file: Path) -> None:
    with capture_with_file(trace_file), agent_trace.session("types") as s:
        s.set_attributes(
            {
                "t.int": 7,
                "t.float": 0.25,
                "t.bool": True,
                "t.strs": ["a", "b"],
                "t.big": 2**70,
                "t.nan": float("nan"),
            }
        )

    [line] = trace_file.read_text().splitlines()
    span = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    values = {a["key"]: a["value"] for a in span["attributes"]}
    assert values["t.int"] == {"intValue": "7"}
    assert values["t.float"] == {"doubleValue": 0.25}
    assert values["t.bool"] == {"boolValue": True}
    assert values["t.strs"] == {
        "arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}
    }
    assert values["t.big"] == {"stringValue": str(2**70)}
    assert values["t.nan"] == {"stringValue": "NaN"}


def test_file_is_the_default_sink_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        settings = agent_trace.configure("default-sink", _env={})
        assert settings.sinks == ("local_file",)
        with agent_trace.session("review"):
            pass
    finally:
        assert agent_trace.shutdown(timeout_s=5.0) is True

    path = tmp_path / ".agent-trace" / "traces.jsonl"
    assert [r.name for r in iter_spans(path, strict=True)] == ["invoke_workflow review"]
    # Traces are the user's data: readable by the owner only.
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_path_comes_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "spans.jsonl"
    try:
        agent_trace.configure("env-path", _env={"AGENT_TRACE_LOCAL_PATH": str(path)})
        with agent_trace.session("review"):
            pass
    finally:
        agent_trace.shutdown(timeout_s=5.0)

    assert [r.name for r in iter_spans(path, strict=True)] == ["invoke_workflow review"]


def test_successive_runs_append_to_the_same_file(trace_file: Path) -> None:
    for task in ("first", "second"):
        with capture_with_file(trace_file), agent_trace.session(task):
            pass

    assert [r.name for r in iter_spans(trace_file, strict=True)] == [
        "invoke_workflow first",
        "invoke_workflow second",
    ]


def test_many_spans_arrive_whole(trace_file: Path) -> None:
    with capture_with_file(trace_file, max_export_batch_size=64) as captured:
        for i in range(300):
            with agent_trace.session("bulk", session_id=f"b{i}") as s, s.turn("a"):
                pass
        sent = {f"{s.context.span_id:016x}" for s in captured.spans}

    with iter_spans(trace_file, strict=True) as stream:
        read = [r.span_id for r in stream]
    assert len(read) == len(sent) == 600
    assert set(read) == sent
    assert stream.stats.lines > 1  # batched, one export request per line


def test_captured_reference_matches_the_file_in_sessions_tree(trace_file: Path) -> None:
    with capture_with_file(trace_file) as captured:
        run_coordination()
        root = captured.one("invoke_workflow ethical_review")
        expected_tree = captured.tree(root)

    records = list(iter_spans(trace_file, strict=True))
    children: dict[str | None, list[SpanRecord]] = {}
    for record in records:
        children.setdefault(record.parent_span_id, []).append(record)

    def tree(record: SpanRecord, depth: int = 0) -> list[str]:
        lines = [f"{'  ' * depth}{record.name}"]
        for child in sorted(children.get(record.span_id, []), key=lambda r: r.start_ns):
            lines.extend(tree(child, depth + 1))
        return lines

    [file_root] = children[None]
    assert "\n".join(tree(file_root)) == expected_tree


def test_values_set_through_the_raw_otel_api_round_trip(trace_file: Path) -> None:
    # Spans of other instrumentation, or `scope.span.set_attribute`, may carry the SDK's
    # richer values: maps, bytes, mixed arrays. The file must keep them as OTLP/JSON says.
    raw = {
        "t.map": {"k": 1, "nested": {"flag": True}},
        "t.bytes": b"\x00\x01\xff",
        "t.mixed": [1, "a"],
    }
    with capture_with_file(trace_file) as captured:
        with agent_trace.session("raw") as s:
            s.span.set_attributes(raw)
        sent = captured.one("invoke_workflow raw")

    [record] = iter_spans(trace_file, strict=True)
    assert record.attributes["t.map"] == {"k": 1, "nested": {"flag": True}}
    assert record.attributes["t.bytes"] == b"\x00\x01\xff"
    assert record.attributes["t.mixed"] == [1, "a"]
    assert dict(sent.attributes["t.map"]) == raw["t.map"]

"""The streaming reader: OTLP JSON lines in, span records out, bad lines reported by number."""

from __future__ import annotations

import base64
import json
import logging
import math
from pathlib import Path

import pytest
from otlp_lines import Span, request_line, write_trace_file

from agent_trace.tracefile import (
    MAX_KEPT_PROBLEMS,
    SpanRecord,
    TraceFileError,
    collect_trace,
    coordination_role,
    iter_spans,
    walk_tree,
)

T0 = 1_764_000_000_000_000_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span_id(n: int) -> str:
    return f"{n:016x}"


def simple_spans(count: int, trace: str = TRACE) -> list[Span]:
    return [
        Span(trace, span_id(n + 1), None, f"op {n}", T0 + n * 1000, T0 + n * 1000 + 500, {"n": n})
        for n in range(count)
    ]


def good_line(*spans: Span) -> str:
    return request_line(spans)


def test_every_field_of_a_span_is_read_back(tmp_path: Path) -> None:
    written = [
        Span(TRACE, span_id(1), None, "invoke_workflow review", T0, T0 + 9_000, {"a": "x"}),
        Span(
            TRACE,
            span_id(2),
            span_id(1),
            "invoke_agent legal",
            T0 + 1_000,
            T0 + 5_000,
            {"gen_ai.agent.name": "legal", "agent_trace.turn.index": 2, "ok": True, "w": 0.5},
            status=2,
            message="legal timed out",
            kind=3,
        ),
    ]
    path = tmp_path / "t.jsonl"
    write_trace_file(path, written, batch=1)

    read = list(iter_spans(path))

    assert [(s.trace_id, s.span_id, s.parent_span_id, s.name) for s in read] == [
        (w.trace_id, w.span_id, w.parent_id, w.name) for w in written
    ]
    turn = read[1]
    assert (turn.start_ns, turn.end_ns, turn.duration_ns) == (T0 + 1_000, T0 + 5_000, 4_000)
    assert turn.kind == 3
    assert turn.attributes == written[1].attrs
    assert (turn.status_code, turn.status_message, turn.is_error) == (2, "legal timed out", True)
    assert turn.resource == {"service.name": "coordinator"}
    assert [s.line for s in read] == [1, 2]


def test_any_value_kinds_decode_to_python_values(tmp_path: Path) -> None:
    attributes = [
        {"key": "s", "value": {"stringValue": "text"}},
        {"key": "b", "value": {"boolValue": False}},
        {"key": "i", "value": {"intValue": "-9007199254740993"}},
        {"key": "i_number", "value": {"intValue": 7}},
        {"key": "d", "value": {"doubleValue": 2.5}},
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}]}}},
        {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "k", "value": {}}]}}},
        {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
        {"key": "empty", "value": {}},
    ]
    span = {
        "traceId": TRACE.upper(),
        "spanId": span_id(1),
        "name": "x",
        "startTimeUnixNano": str(T0),
        "endTimeUnixNano": str(T0 + 1),
        "attributes": attributes,
    }
    line = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(line) + "\n")

    (record,) = list(iter_spans(path))

    attrs = record.attributes
    assert record.trace_id == TRACE
    assert attrs["s"] == "text" and attrs["b"] is False
    assert attrs["i"] == -9007199254740993 and attrs["i_number"] == 7
    assert attrs["d"] == 2.5 and math.isnan(attrs["nan"])
    assert attrs["arr"] == [1, 2]
    assert attrs["kv"] == {"k": None}
    assert attrs["raw"] == b"\x00\xff"
    assert attrs["empty"] is None


def test_proto_field_names_are_accepted_as_well_as_camel_case(tmp_path: Path) -> None:
    span = {
        "trace_id": TRACE,
        "span_id": span_id(3),
        "parent_span_id": span_id(2),
        "name": "snake",
        "kind": "SPAN_KIND_SERVER",
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 10,
        "status": {"code": "STATUS_CODE_ERROR"},
        "attributes": [{"key": "k", "value": {"string_value": "v"}}],
    }
    line = {"resource_spans": [{"scope_spans": [{"spans": [span]}]}]}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(line) + "\n")

    (record,) = list(iter_spans(path))

    assert (record.parent_span_id, record.kind, record.status_code) == (span_id(2), 2, 2)
    assert record.attributes == {"k": "v"}


def test_a_malformed_line_in_the_middle_is_skipped_and_reported_with_its_number(
    tmp_path: Path,
) -> None:
    spans = simple_spans(8)
    path = tmp_path / "t.jsonl"
    inserted = write_trace_file(path, spans, batch=2, insert={3: '{"resourceSpans": [{]}'})
    seen = []

    stream = iter_spans(path, on_problem=seen.append)
    names = [s.name for s in stream]

    assert inserted == [3]
    assert names == [s.name for s in spans]
    assert stream.stats.skipped_lines == 1
    assert stream.stats.lines == 5
    assert stream.stats.spans == 8
    (problem,) = stream.stats.problems
    assert problem.line == 3
    assert "not valid JSON" in problem.reason
    assert seen == [problem]


def test_strict_mode_refuses_the_malformed_line_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(path, simple_spans(6), batch=2, insert={3: "not json at all"})
    read = []

    with pytest.raises(TraceFileError) as caught:
        for span in iter_spans(path, strict=True):
            read.append(span.name)

    assert caught.value.line == 3
    assert str(caught.value) == f"{path}:3: {caught.value.reason}"
    assert read == ["op 0", "op 1", "op 2", "op 3"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"resourceMetrics": []}', "no resourceSpans"),
        ('{"resourceSpans": {}}', "expected a list"),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz","spanId":"'
            + span_id(1)
            + '","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}',
            "traceId: expected 32 hex digits",
        ),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
            + TRACE
            + '","spanId":"'
            + span_id(1)
            + '","endTimeUnixNano":"2"}]}]}]}',
            "start: missing time",
        ),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
            + TRACE
            + '","spanId":"'
            + span_id(1)
            + '","startTimeUnixNano":"9","endTimeUnixNano":"2"}]}]}]}',
            "ends before it starts",
        ),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
            + TRACE
            + '","spanId":"'
            + span_id(1)
            + '","startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":'
            + '[{"key":"k","value":{"weirdValue":1}}]}]}]}]}',
            "unknown AnyValue kind 'weirdValue'",
        ),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
            + TRACE
            + '","spanId":"'
            + span_id(1)
            + '","kind":9,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}',
            "kind: unknown value 9",
        ),
    ],
)
def test_each_kind_of_malformed_line_names_its_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(path, simple_spans(2), batch=1, insert={2: text})

    stream = iter_spans(path, on_problem=lambda p: None)
    names = [s.name for s in stream]

    assert names == ["op 0", "op 1"]
    (problem,) = stream.stats.problems
    assert problem.line == 2
    assert reason in problem.reason


def _one_span_line(*, start: object = "1", end: object = "2", value: object = None) -> str:
    """A line of one span, its times and one attribute's AnyValue given as JSON values."""
    span: dict[str, object] = {
        "traceId": TRACE,
        "spanId": span_id(1),
        "startTimeUnixNano": start,
        "endTimeUnixNano": end,
    }
    if value is not None:
        span["attributes"] = [{"key": "n", "value": value}]
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (_one_span_line(value={"intValue": "--1"}), "is not a 64-bit integer"),
        (_one_span_line(value={"intValue": "\u00b2"}), "is not a 64-bit integer"),
        (_one_span_line(value={"intValue": "-"}), "is not a 64-bit integer"),
        (_one_span_line(value={"intValue": " 1"}), "is not a 64-bit integer"),
        (_one_span_line(value={"intValue": "1_000"}), "is not a 64-bit integer"),
        (_one_span_line(value={"intValue": str(2**63)}), "is not a 64-bit integer"),
        (_one_span_line(value={"intValue": str(-(2**63) - 1)}), "is not a 64-bit integer"),
        (_one_span_line(value={"intValue": 10**30}), "is not a 64-bit integer"),
        (_one_span_line(value={"intValue": "9" * 5000}), "is not a 64-bit integer"),
        (_one_span_line(value={"doubleValue": 10**400}), "beyond the range of a double"),
        (_one_span_line(start="\u00b2", end="\u00b3"), "start: expected unix nanoseconds"),
        (_one_span_line(start="+1"), "start: expected unix nanoseconds"),
        (_one_span_line(start=str(2**64), end=str(2**64)), "beyond OTLP's 64-bit range"),
        (_one_span_line(start="1", end="9" * 30), "end: '999"),
        (_one_span_line(start=10**30, end=10**30), "beyond OTLP's 64-bit range"),
        (_one_span_line(start="1" * 5000, end="2" * 5000), "beyond OTLP's 64-bit range"),
        (_one_span_line().replace('"1"', "1" * 5000), "a number too long to read"),
    ],
    ids=[
        "int two signs",
        "int superscript",
        "int sign alone",
        "int with a space",
        "int with underscores",
        "int 2**63",
        "int below -2**63",
        "int number beyond int64",
        "int 5000 digits",
        "double beyond float",
        "time superscript",
        "time with a plus",
        "time 2**64",
        "end time 30 digits",
        "time number beyond 2**64",
        "time 5000 digits",
        "json number 5000 digits",
    ],
)
def test_numbers_outside_their_otlp_type_make_the_line_malformed(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(path, simple_spans(2), batch=1, insert={2: line})

    stream = iter_spans(path, on_problem=lambda p: None)
    names = [s.name for s in stream]

    assert names == ["op 0", "op 1"]
    (problem,) = stream.stats.problems
    assert problem.line == 2
    assert reason in problem.reason
    with pytest.raises(TraceFileError) as caught:
        list(iter_spans(path, strict=True))
    assert caught.value.line == 2


def test_numbers_at_the_edges_of_their_otlp_types_are_read(tmp_path: Path) -> None:
    lines = [
        _one_span_line(
            start=str(2**64 - 1), end=str(2**64 - 1), value={"intValue": str(2**63 - 1)}
        ),
        _one_span_line(start=2**64 - 1, end=2**64 - 1, value={"intValue": -(2**63)}),
        _one_span_line(
            start="0" * 40 + "7", end="0" * 5000 + "8", value={"intValue": "-0" + "0" * 30 + "5"}
        ),
        _one_span_line(value={"doubleValue": 10**300}),
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    stream = iter_spans(path, strict=True)
    read = [(s.start_ns, s.end_ns, s.attributes["n"]) for s in stream]

    assert read == [
        (2**64 - 1, 2**64 - 1, 2**63 - 1),
        (2**64 - 1, 2**64 - 1, -(2**63)),
        (7, 8, -5),
        (1, 2, float(10**300)),
    ]


def test_values_nested_too_deeply_make_the_line_malformed(tmp_path: Path) -> None:
    depth = 5000
    value = '{"arrayValue":{"values":[' * depth + '{"stringValue":"x"}' + "]}}" * depth
    line = _one_span_line(value={"stringValue": "@"}).replace('{"stringValue": "@"}', value)
    path = tmp_path / "t.jsonl"
    write_trace_file(path, simple_spans(1), batch=1, insert={1: line})

    stream = iter_spans(path, on_problem=lambda p: None)

    assert [s.name for s in stream] == ["op 0"]
    assert stream.stats.skipped_lines == 1
    assert "nested too deeply" in stream.stats.problems[0].reason


def test_one_bad_span_drops_its_whole_line_and_no_other(tmp_path: Path) -> None:
    good = simple_spans(3)
    bad = good[1]._replace(span_id="nothex")
    path = tmp_path / "t.jsonl"
    path.write_text(good_line(good[0]) + "\n" + good_line(bad, good[2]) + "\n")

    stream = iter_spans(path, on_problem=lambda p: None)
    names = [s.name for s in stream]

    assert names == ["op 0"]
    assert stream.stats.problems[0].line == 2
    assert "spans[0].spanId" in stream.stats.problems[0].reason


def test_invalid_utf8_and_a_truncated_last_line_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    line = good_line(*simple_spans(1))
    path.write_bytes(line.encode() + b"\n" + b'{"x": "\xff\xfe"}\n' + line.encode()[:40])

    stream = iter_spans(path, on_problem=lambda p: None)
    count = sum(1 for _ in stream)

    assert count == 1
    first, second = stream.stats.problems
    assert (first.line, first.reason) == (2, "not UTF-8 text")
    assert second.line == 3
    assert "not valid JSON" in second.reason


def test_an_overlong_line_is_skipped_without_being_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    huge = good_line(*simple_spans(200))
    small = good_line(*simple_spans(1))
    path.write_text(small + "\n" + huge + "\n" + small + "\n")

    stream = iter_spans(path, max_line_bytes=len(small) + 10, on_problem=lambda p: None)
    count = sum(1 for _ in stream)

    assert count == 2
    assert stream.stats.problems[0].line == 2
    assert "longer than" in stream.stats.problems[0].reason


def test_blank_lines_are_ignored_and_not_counted(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n" + good_line(*simple_spans(2)) + "\n   \n\n")

    stream = iter_spans(path)
    count = sum(1 for _ in stream)

    assert count == 2
    assert (stream.stats.lines, stream.stats.skipped_lines) == (1, 0)


def test_problems_are_all_counted_but_only_the_first_few_kept(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(f"garbage {n}\n" for n in range(MAX_KEPT_PROBLEMS + 15)))

    stream = iter_spans(path, on_problem=lambda p: None)
    count = sum(1 for _ in stream)

    assert count == 0
    assert stream.stats.skipped_lines == MAX_KEPT_PROBLEMS + 15
    assert [p.line for p in stream.stats.problems] == list(range(1, MAX_KEPT_PROBLEMS + 1))


def test_default_problem_handler_logs_a_few_warnings_not_one_per_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(f"garbage {n}\n" for n in range(50)))

    with caplog.at_level(logging.WARNING, logger="agent_trace.tracefile"):
        stream = iter_spans(path)
        list(stream)

    assert stream.stats.skipped_lines == 50
    assert 2 <= len(caplog.records) <= 10
    assert "line 1 skipped" in caplog.records[0].getMessage()


def test_a_missing_file_raises_a_trace_file_error_at_once(tmp_path: Path) -> None:
    with pytest.raises(TraceFileError, match="no such file") as caught:
        iter_spans(tmp_path / "nope.jsonl")
    assert caught.value.line is None


def test_a_directory_is_refused_as_a_trace_file(tmp_path: Path) -> None:
    with pytest.raises(TraceFileError, match="directory"):
        iter_spans(tmp_path)


def test_the_file_is_closed_when_iteration_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(path, simple_spans(10), batch=1)

    with iter_spans(path) as stream:
        next(stream)
    assert stream._file.closed


def read_back(tmp_path: Path, spans: list[Span]) -> list[SpanRecord]:
    path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.jsonl"
    write_trace_file(path, spans, batch=3)
    return list(iter_spans(path))


def tree_shape(tmp_path: Path, spans: list[Span]) -> list[tuple[str, int, bool]]:
    return [(r.span.name, r.depth, r.orphan) for r in walk_tree(read_back(tmp_path, spans))]


def test_walk_tree_orders_depth_first_with_children_by_start_time(tmp_path: Path) -> None:
    def s(n: int, parent: int | None, start: int) -> Span:
        return Span(
            TRACE,
            span_id(n),
            span_id(parent) if parent else None,
            f"s{n}",
            T0 + start,
            T0 + start + 5,
            {},
        )

    # File order is end-order, not tree order: the walk must not depend on it.
    spans = [s(4, 2, 30), s(3, 1, 20), s(2, 1, 10), s(5, 3, 25), s(1, None, 0)]

    assert tree_shape(tmp_path, spans) == [
        ("s1", 0, False),
        ("s2", 1, False),
        ("s4", 2, False),
        ("s3", 1, False),
        ("s5", 2, False),
    ]


def test_walk_tree_shows_a_span_whose_parent_is_missing_as_an_orphan_root(
    tmp_path: Path,
) -> None:
    spans = [
        Span(TRACE, span_id(1), None, "root", T0, T0 + 10, {}),
        Span(TRACE, span_id(2), span_id(99), "lost", T0 + 5, T0 + 6, {}),
    ]

    assert tree_shape(tmp_path, spans) == [("root", 0, False), ("lost", 0, True)]


def test_walk_tree_yields_each_span_once_even_on_a_parent_cycle(tmp_path: Path) -> None:
    spans = [
        Span(TRACE, span_id(1), span_id(2), "a", T0, T0 + 10, {}),
        Span(TRACE, span_id(2), span_id(1), "b", T0 + 1, T0 + 9, {}),
        Span(TRACE, span_id(3), None, "root", T0 + 2, T0 + 3, {}),
    ]

    shape = tree_shape(tmp_path, spans)

    assert sorted(name for name, _, _ in shape) == ["a", "b", "root"]
    assert shape[0] == ("root", 0, False)


@pytest.mark.parametrize(
    ("name", "attrs", "role"),
    [
        ("invoke_agent ethics", {}, "turn"),
        ("custom name", {"sentry.op": "agent_trace.compliance.check"}, "check"),
        ("vote legal", {}, "vote"),
        ("consensus_round weighted_vote", {}, "round"),
        ("invoke_workflow review", {}, "session"),
        ("GET /health", {"sentry.op": ["not", "a", "string"]}, None),
    ],
)
def test_coordination_role_reads_sentry_op_then_the_name(
    tmp_path: Path, name: str, attrs: dict[str, object], role: str | None
) -> None:
    (record,) = read_back(tmp_path, [Span(TRACE, span_id(1), None, name, T0, T0 + 1, attrs)])

    assert coordination_role(record) == role


def test_containing_decodes_only_the_lines_that_mention_the_text(tmp_path: Path) -> None:
    other = "c" * 32
    path = tmp_path / "t.jsonl"
    path.write_text(
        good_line(*simple_spans(2, other))
        + "\ngarbage without the id\n"
        + good_line(*simple_spans(3, TRACE.upper()))
        + "\n"
    )

    stream = iter_spans(path, containing=TRACE, on_problem=lambda p: None)
    read = [s.trace_id for s in stream]

    assert read == [TRACE] * 3
    assert (stream.stats.lines, stream.stats.skipped_lines) == (1, 0)


def test_collect_trace_keeps_one_trace_up_to_a_limit(tmp_path: Path) -> None:
    other = "c" * 32
    path = tmp_path / "t.jsonl"
    write_trace_file(path, simple_spans(4, other) + simple_spans(5) + simple_spans(2, other))

    for checked in (False, True):
        spans, left_out = collect_trace(path, TRACE, max_spans=3, checked=checked)

        assert [s.name for s in spans] == ["op 0", "op 1", "op 2"]
        assert left_out == 2

"""`agent-trace show`: one trace drawn as a waterfall tree, found by id, session or recency."""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

import pytest
from otlp_lines import Span, write_trace_file

from agent_trace.cli import show
from agent_trace.tracefile import SpanRecord

T0 = 1_764_000_000_000_000_000
US = 1_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SESSION = "sess-review-7"


def sid(n: int) -> str:
    return f"{n:016x}"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="agent-trace")
    show.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["show", *argv])


def run_show(*argv: str) -> int:
    return show.run(parse(*argv))


def review_trace(trace: str = TRACE, session: str = SESSION, t0: int = T0) -> list[Span]:
    """A session with turns, a violation, a round with votes and an ERROR escalation.

    Listed in end order, as the SDK writes; names are unique so rows can be found by name.
    """
    common = {"gen_ai.conversation.id": session}

    def at(
        n: int,
        parent: int | None,
        name: str,
        start: int,
        end: int,
        attrs: dict[str, object],
        status: int = 0,
        message: str = "",
    ) -> Span:
        parent_id = sid(parent) if parent else None
        return Span(
            trace,
            sid(n),
            parent_id,
            name,
            t0 + start * US,
            t0 + end * US,
            {**common, **attrs},
            status,
            message,
        )

    violation = {
        "agent_trace.compliance.policy": "privacy",
        "agent_trace.compliance.result": "violation",
        "agent_trace.compliance.violation.type": "privacy",
        "agent_trace.compliance.severity": "high",
        "agent_trace.compliance.enforcement": "block",
    }
    return [
        at(3, 2, "policy_check privacy", 50, 80, attrs=violation),
        at(2, 1, "invoke_agent ethics", 0, 200, attrs={"gen_ai.agent.name": "ethics"}),
        at(4, 1, "invoke_agent legal", 200, 500, attrs={"gen_ai.agent.name": "legal"}),
        at(6, 5, "vote ethics", 510, 510, attrs={"agent_trace.vote.value": "approve"}),
        at(7, 5, "vote legal", 520, 520, attrs={"agent_trace.vote.value": "reject"}),
        at(
            5,
            1,
            "consensus_round weighted_vote",
            500,
            700,
            attrs={"agent_trace.consensus.round": 1, "agent_trace.consensus.outcome": "consensus"},
        ),
        at(
            8,
            1,
            "escalate deadlock",
            700,
            1000,
            attrs={"error.type": "escalation_failed"},
            status=2,
            message="no reviewer answered",
        ),
        at(
            1,
            None,
            "invoke_workflow ethical_review",
            0,
            1000,
            attrs={"agent_trace.session.outcome": "escalated"},
        ),
    ]


def expected_rows(spans: list[Span]) -> list[tuple[str, int]]:
    """Depth-first order with children by start time, computed here from the tuples."""
    by_parent: dict[str | None, list[Span]] = {}
    for span in spans:
        by_parent.setdefault(span.parent_id, []).append(span)
    rows: list[tuple[str, int]] = []

    def visit(span: Span, depth: int) -> None:
        rows.append((span.name, depth))
        for child in sorted(by_parent.get(span.span_id, []), key=lambda s: s.start_ns):
            visit(child, depth + 1)

    for root in by_parent[None]:
        visit(root, 0)
    return rows


def drawn_rows(out: str) -> list[str]:
    # The header is two lines and a blank one.
    return out.splitlines()[3:]


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "traces.jsonl"
    write_trace_file(path, review_trace(), batch=3)
    return path


def test_rows_follow_the_tree_indented_three_columns_per_level(
    trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_show(TRACE, "--file", str(trace_file), "--width", "160")

    rows = drawn_rows(capsys.readouterr().out)
    expected = expected_rows(review_trace())
    assert code == 0
    assert len(rows) == len(expected)
    for line, (name, depth) in zip(rows, expected, strict=True):
        assert line[3 * depth :].startswith(name), (line, name, depth)
        assert not re.search(r"\w", line[: 3 * depth]), line


def test_violations_errors_agents_and_votes_are_marked(
    trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_show(TRACE, "--file", str(trace_file))

    out = capsys.readouterr().out
    row = {_name_of(line): line for line in drawn_rows(out)}
    assert "!! violation privacy/high (block)" in row["policy_check privacy"]
    assert "!! ERROR escalation_failed: no reviewer answered" in row["escalate deadlock"]
    assert "agent=ethics" in row["invoke_agent ethics"]
    assert "vote=approve" in row["vote ethics"]
    assert "vote=reject" in row["vote legal"]
    assert "round 1: consensus" in row["consensus_round weighted_vote"]
    assert "!!" not in row["invoke_agent legal"]
    header = out.splitlines()[:2]
    assert f"trace {TRACE}" in header[0] and f"session {SESSION}" in header[0]
    assert "outcome escalated" in header[0]
    assert "1 violation" in header[1] and "1 error" in header[1] and "1.00 ms" in header[1]


def _name_of(line: str) -> str:
    match = re.search(r"[a-z_]+(?: [a-z_]+)*", line)
    assert match is not None
    return match.group(0)


def test_bars_place_each_span_within_the_trace(
    trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_show(TRACE, "--file", str(trace_file), "--ascii", "--width", "150")

    rows = drawn_rows(capsys.readouterr().out)
    spans = {s.name: s for s in review_trace()}
    total = 1000 * US
    for line in rows:
        name = _name_of(line)
        bar = re.findall(r"\|([# ]{10,})\|", line)[-1]
        width = len(bar)
        first, stop = bar.index("#"), bar.rindex("#") + 1
        span = spans[name]
        assert abs(first - (span.start_ns - T0) / total * width) <= 1, line
        assert abs(stop - (span.end_ns - T0) / total * width) <= 1, line
        assert stop > first


def test_the_last_trace_is_the_one_whose_root_started_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    early, late, middle = "a" * 32, "b" * 32, "c" * 32
    path = tmp_path / "t.jsonl"
    spans = (
        review_trace(late, "late", T0 + 3_000_000)
        + review_trace(middle, "middle", T0 + 2_000_000)
        + review_trace(early, "early", T0 + 1_000_000)
    )
    write_trace_file(path, spans, batch=5)

    assert run_show("--last", "--file", str(path)) == 0
    by_flag = capsys.readouterr().out
    assert run_show("--file", str(path)) == 0
    by_default = capsys.readouterr().out

    assert by_flag.startswith(f"trace {late}  session late")
    assert by_default == by_flag


def test_a_session_id_selects_its_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(
        path, review_trace("a" * 32, "one") + review_trace("b" * 32, "two", T0 + 99), batch=4
    )

    code = run_show("--session", "one", "--file", str(path))

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"trace {'a' * 32}  session one")
    assert len(drawn_rows(out)) == len(review_trace())


def test_a_unique_prefix_finds_the_trace_and_an_ambiguous_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    first, second = "abcd" + "1" * 28, "abcd" + "2" * 28
    write_trace_file(path, review_trace(first) + review_trace(second), batch=4)

    assert run_show("abcd1", "--file", str(path)) == 0
    assert capsys.readouterr().out.startswith(f"trace {first}")
    assert run_show("abcd", "--file", str(path)) == 2
    err = capsys.readouterr().err
    assert "ambiguous" in err and first in err and second in err


def test_an_unknown_trace_or_session_exits_1(
    trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_show("f" * 32, "--file", str(trace_file)) == 1
    assert "no spans of trace" in capsys.readouterr().err
    assert run_show("--session", "nobody", "--file", str(trace_file)) == 1
    assert "no session 'nobody'" in capsys.readouterr().err


def test_a_value_that_is_not_a_trace_id_is_a_usage_error(
    trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_show("not-hex!", "--file", str(trace_file)) == 2
    assert "is not a trace id" in capsys.readouterr().err


@pytest.mark.parametrize("width", ["0", "-5"])
def test_a_width_under_one_column_is_a_usage_error(
    width: str, trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_show(TRACE, "--file", str(trace_file), "--width", width) == 2
    assert "--width must be at least 1" in capsys.readouterr().err


def test_a_trace_id_and_last_together_are_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit) as caught:
        parse(TRACE, "--last")
    assert caught.value.code == 2


def test_a_missing_file_exits_2_with_a_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_show("--file", str(tmp_path / "absent.jsonl"))

    err = capsys.readouterr().err
    assert code == 2
    assert "absent.jsonl: no such file" in err
    assert "Traceback" not in err


def test_an_empty_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")

    assert run_show("--file", str(path)) == 1
    assert "no spans" in capsys.readouterr().err


def test_a_malformed_line_is_reported_by_number_and_the_trace_still_drawn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(path, review_trace(), batch=2, insert={3: '{"resourceSpans": [truncated'})

    code = run_show("--file", str(path))

    captured = capsys.readouterr()
    assert code == 0
    assert "line 3 skipped: not valid JSON" in captured.err
    assert len(drawn_rows(captured.out)) == len(review_trace())


def test_strict_mode_refuses_a_malformed_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(path, review_trace(), batch=2, insert={3: "garbage"})

    code = run_show("--strict", "--file", str(path))

    captured = capsys.readouterr()
    assert code == 2
    assert f"{path}:3: not valid JSON" in captured.err
    assert captured.out == ""


def test_max_spans_limits_the_drawing_and_says_so(
    trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_show(TRACE, "--file", str(trace_file), "--max-spans", "3") == 0

    out = capsys.readouterr().out
    assert len(review_trace()) - 3 == int(re.search(r"\.\.\. (\d+) more spans", out).group(1))


def test_a_span_whose_parent_is_missing_is_drawn_as_a_marked_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    spans = [s for s in review_trace() if s.name != "invoke_agent ethics"]
    write_trace_file(path, spans)

    run_show(TRACE, "--file", str(path))

    rows = drawn_rows(capsys.readouterr().out)
    orphan = next(line for line in rows if "policy_check privacy" in line)
    assert orphan.startswith("policy_check privacy")
    assert f"(parent {sid(2)} not in file)" in orphan


def test_a_terminal_that_cannot_encode_unicode_gets_ascii(
    trace_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stdout)

    code = run_show(TRACE, "--file", str(trace_file))

    stdout.flush()
    text = raw.getvalue().decode("ascii")
    assert code == 0
    assert "`- " in text and "#" in text and " us" in text


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (850_000, "850 µs"),
        (12_300_000, "12.30 ms"),
        (1_234_000_000, "1.234 s"),
        (75_000_000_000, "75.0 s"),
    ],
)
def test_durations_are_written_for_people(ns: int, text: str) -> None:
    assert show.format_duration(ns) == text


def test_a_full_trace_id_reads_the_file_once_and_still_reports_bad_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(path, review_trace(), batch=2, insert={2: "garbage"})

    code = run_show(TRACE, "--file", str(path))

    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.count("line 2 skipped") == 1
    assert len(drawn_rows(captured.out)) == len(review_trace())


def record(
    n: int,
    parent: int | None,
    name: str,
    start_ns: int,
    end_ns: int,
    attrs: dict[str, object],
) -> SpanRecord:
    """A span as a caller of render_trace may hold it, beyond what the file reader accepts."""
    return SpanRecord(
        TRACE,
        sid(n),
        sid(parent) if parent else None,
        name,
        1,
        start_ns,
        end_ns,
        attrs,
        (),
        0,
        "",
        {},
        1,
    )


def test_times_past_the_calendar_and_numbers_past_a_float_are_drawn_as_text() -> None:
    huge = 10**400
    start = 10**30  # year ~3e13: no calendar date, no datetime
    spans = [
        record(1, None, "invoke_workflow review", start, start + huge, {}),
        record(
            2,
            1,
            "consensus_round vote",
            start,
            start + 5,
            {"agent_trace.consensus.agreement": huge},
        ),
        record(
            3,
            2,
            "vote legal",
            start,
            start + 1,
            {
                "agent_trace.vote.value": "approve",
                "agent_trace.vote.weight": huge,
                "agent_trace.vote.confidence": -huge,
            },
        ),
        record(
            4,
            1,
            "invoke_agent ethics",
            start,
            start + 2,
            {
                "agent_trace.target.name": "latency",
                "agent_trace.target.met": False,
                "agent_trace.target.actual": 10**5000,
                "agent_trace.target.threshold": huge,
            },
        ),
    ]

    lines = show.render_trace(spans, width=200)

    text = "\n".join(lines)
    assert f"started {start} ns after the epoch" in text
    assert f"weight {huge}" in text
    assert f"confidence {-huge}" in text
    assert f"agreement {huge}" in text
    assert f"actual <integer of {(10**5000).bit_length()} bits>" in text
    assert f"{huge // 10**9} s" in lines[1]


def test_control_characters_in_names_and_details_are_escaped() -> None:
    spans = [
        record(
            1, None, "invoke_workflow r\x1b[2J", T0, T0 + 10, {"gen_ai.conversation.id": "s\x07"}
        ),
        record(2, 1, "invoke_agent e\x9b1m", T0, T0 + 5, {"gen_ai.agent.name": "e\ud800"}),
    ]

    text = "\n".join(show.render_trace(spans, width=200))

    assert "r\\x1b[2J" in text
    assert "session s\\x07" in text
    assert "e\\x9b1m" in text
    assert "agent=e\\ud800" in text
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]", text)

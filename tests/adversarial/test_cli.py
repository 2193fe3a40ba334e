"""`agent-trace show/report/replay` on malicious trace files, run as a user runs them.

The promise (README, agent_trace/tracefile.py): exit 0, 1 or 2 with a message, never a
traceback; show and report print no raw terminal control sequences; the HTML report lets no
span name inject markup.
"""

# ruff: noqa: SIM117

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

import agent_trace
from agent_trace.tracefile import TraceFileError, iter_spans
from tests.adversarial._support import (
    START_NS,
    CliResult,
    kv,
    local_pipeline,
    request_line,
    run_cli,
    span_json,
    write_lines,
)
from tests.backends.otlp_recorder import OtlpHttpRecorder

READERS = [("show",), ("report",), ("report", "--json")]


def read(path: Path, *command: str) -> CliResult:
    return run_cli(*command, "--file", str(path))


def assert_answered(result: CliResult) -> None:
    assert not result.crashed, result.stderr.decode("utf-8", "replace")[-2000:]
    assert result.code in (0, 1, 2)


# -- numbers the reader cannot hold ---------------------------------------------------------------

UNPARSABLE = {
    "intValue --1": request_line(span_json(attributes=[kv("n", {"intValue": "--1"})])),
    "intValue superscript": request_line(span_json(attributes=[kv("n", {"intValue": "\u00b2"})])),
    "intValue 5000 digits": request_line(span_json(attributes=[kv("n", {"intValue": "9" * 5000})])),
    "start time superscript": request_line(span_json(start="\u00b2", end="\u00b3")),
    "start time 5000 digits": request_line(span_json(start="1" * 5000, end="2" * 5000)),
    "intValue beyond int64": request_line(span_json(attributes=[kv("n", {"intValue": 2**64})])),
    "doubleValue beyond a double": request_line(
        span_json(attributes=[kv("n", {"doubleValue": 10**400})])
    ),
    "event time superscript": request_line(
        span_json(events=[{"name": "e", "timeUnixNano": "\u00b9"}])
    ),
    "end time 2**64": request_line(span_json(start="1", end=str(2**64))),
    "a json number of 5000 digits": request_line(span_json(start=1, end=2)).replace(
        '"endTimeUnixNano": 2', '"endTimeUnixNano": ' + "2" * 5000
    ),
}


@pytest.mark.parametrize("line", UNPARSABLE.values(), ids=list(UNPARSABLE))
def test_reader_skips_numbers_it_cannot_parse(tmp_path: Path, line: str) -> None:
    path = write_lines(tmp_path / "t.jsonl", request_line(span_json(span_id="c" * 16)), line)
    stream = iter_spans(path)
    with stream:
        spans = list(stream)
    assert [s.span_id for s in spans] == ["c" * 16]
    assert stream.stats.skipped_lines == 1
    with pytest.raises(TraceFileError), iter_spans(path, strict=True) as strict:
        list(strict)


@pytest.mark.parametrize("command", READERS, ids=" ".join)
@pytest.mark.parametrize(
    "line", [UNPARSABLE["intValue --1"], UNPARSABLE["start time superscript"]], ids=["int", "time"]
)
def test_show_and_report_survive_unparsable_numbers(
    tmp_path: Path, command: tuple[str, ...], line: str
) -> None:
    path = write_lines(tmp_path / "t.jsonl", request_line(span_json(span_id="c" * 16)), line)
    assert_answered(read(path, *command))


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_times_beyond_the_calendar_do_not_crash(tmp_path: Path, command: tuple[str, ...]) -> None:
    far = "9" * 25
    path = write_lines(tmp_path / "t.jsonl", request_line(span_json(start=far, end=far)))
    assert_answered(read(path, *command))


def _huge_number_lines() -> dict[str, str]:
    big = {"intValue": "1" + "0" * 400}
    turn = span_json(
        "invoke_agent ethics",
        attributes=[
            kv("sentry.op", {"stringValue": "gen_ai.invoke_agent"}),
            kv("agent_trace.target.name", {"stringValue": "latency"}),
            kv("agent_trace.target.met", {"boolValue": False}),
            kv("agent_trace.target.actual", big),
            kv("agent_trace.target.threshold", big),
        ],
    )
    rnd = span_json("consensus_round vote", span_id="c" * 16)
    vote = span_json(
        "vote ethics",
        span_id="d" * 16,
        parent="c" * 16,
        attributes=[
            kv("agent_trace.vote.value", {"stringValue": "approve"}),
            kv("agent_trace.vote.weight", big),
        ],
    )
    return {"target figures": request_line(turn), "vote weight": request_line(rnd, vote)}


HUGE_NUMBERS = _huge_number_lines()


@pytest.mark.parametrize("command", READERS, ids=" ".join)
@pytest.mark.parametrize("line", HUGE_NUMBERS.values(), ids=list(HUGE_NUMBERS))
def test_integers_beyond_float_range_do_not_crash(
    tmp_path: Path, command: tuple[str, ...], line: str
) -> None:
    path = write_lines(tmp_path / "t.jsonl", line)
    assert_answered(read(path, *command))


# -- what the library itself writes ---------------------------------------------------------------

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31m"


def _trace_with_escapes(path: Path) -> Path:
    local_pipeline(path)
    try:
        with agent_trace.session(f"review{ESCAPES}", session_id=f"s{ESCAPES}") as session:
            with session.turn(f"ethics{ESCAPES}", role=f"role{ESCAPES}"):
                agent_trace.monitor_performance_target(f"lat{ESCAPES}", 1.0, 2.0, unit=ESCAPES)
            with session.consensus_round(f"vote{ESCAPES}") as rnd:
                rnd.vote(f"legal{ESCAPES}", f"approve{ESCAPES}")
                rnd.conclude()
            with session.policy_check(f"privacy{ESCAPES}") as check:
                check.violation(f"pii{ESCAPES}", f"high{ESCAPES}")
            session.set_outcome(f"approved{ESCAPES}")
    finally:
        agent_trace.shutdown()
    return path


@pytest.mark.parametrize("command", [("show",), ("report",)], ids=" ".join)
def test_terminal_output_carries_no_control_sequences(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    path = _trace_with_escapes(tmp_path / "t.jsonl")
    result = read(path, *command)
    assert result.code == 0
    assert b"review" in result.stdout or b"ethics" in result.stdout
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", result.stdout + result.stderr)


def test_json_report_escapes_control_sequences(tmp_path: Path) -> None:
    path = _trace_with_escapes(tmp_path / "t.jsonl")
    result = read(path, "report", "--json")
    assert result.code == 0
    assert b"\x1b" not in result.stdout
    summary = json.loads(result.stdout)
    assert summary["sessions"]["count"] == 1


def _trace_with_surrogates(path: Path) -> Path:
    local_pipeline(path)
    try:
        with agent_trace.session("review\ud800") as session:
            with session.turn("ethics\udcff"):
                pass
    finally:
        agent_trace.shutdown()
    return path


@pytest.mark.parametrize("command", [("show",), ("report",)], ids=" ".join)
def test_names_with_lone_surrogates_do_not_crash(tmp_path: Path, command: tuple[str, ...]) -> None:
    path = _trace_with_surrogates(tmp_path / "t.jsonl")
    assert_answered(read(path, *command))


CONTROLS = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


def _line_with_escapes_in_every_printed_field() -> str:
    """Escapes where the library's own writer cannot put them: error texts, events, resource."""
    root = span_json(
        f"invoke_workflow review{ESCAPES}",
        attributes=[
            kv("gen_ai.conversation.id", {"stringValue": f"s{ESCAPES}"}),
            kv("agent_trace.session.task_type", {"stringValue": f"task{ESCAPES}"}),
            kv("error.type", {"stringValue": f"Boom{ESCAPES}"}),
        ],
        status={"code": 2, "message": f"failed{ESCAPES}"},
    )
    turn = span_json(
        f"invoke_agent ethics{ESCAPES}",
        span_id="c" * 16,
        parent="b" * 16,
        events=[
            {
                "name": "exception",
                "timeUnixNano": str(START_NS + 1),
                "attributes": [
                    kv("exception.type", {"stringValue": f"Err{ESCAPES}"}),
                    kv("exception.message", {"stringValue": f"msg{ESCAPES}"}),
                ],
            }
        ],
        status={"code": 2},
    )
    handoff = span_json(
        "handoff ethics",
        span_id="d" * 16,
        parent="b" * 16,
        attributes=[kv("agent_trace.handoff.reason", {"stringValue": f"why{ESCAPES}"})],
    )
    conflict = span_json(
        "resolve_conflict x",
        span_id="e" * 16,
        parent="b" * 16,
        attributes=[
            kv(
                "agent_trace.conflict.parties",
                {"arrayValue": {"values": [{"stringValue": ESCAPES}]}},
            ),
            kv("agent_trace.conflict.outcome", {"stringValue": f"out{ESCAPES}"}),
        ],
    )
    return request_line(root, turn, handoff, conflict, service=f"svc{ESCAPES}")


@pytest.mark.parametrize("command", [("show",), ("report",)], ids=" ".join)
def test_error_texts_events_and_the_resource_carry_no_control_sequences(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    path = write_lines(tmp_path / "t.jsonl", _line_with_escapes_in_every_printed_field())
    result = read(path, *command)
    assert result.code == 0
    assert b"Boom" in result.stdout
    assert b"\\x1b" in result.stdout
    assert not CONTROLS.search(result.stdout + result.stderr)


def _line_with_lone_surrogates() -> str:
    """Names as an older writer (or anyone) can leave them: JSON escapes of lone surrogates."""
    root = span_json(
        "invoke_workflow review\ud800",
        attributes=[kv("gen_ai.conversation.id", {"stringValue": "s\udfff"})],
    )
    turn = span_json(
        "invoke_agent ethics\udcff",
        span_id="c" * 16,
        parent="b" * 16,
        attributes=[kv("gen_ai.agent.name", {"stringValue": "ethics\udcff"})],
    )
    line = request_line(root, turn, service="svc\ud801")
    assert "\\udcff" in line
    return line


@pytest.mark.parametrize("command", [("show",), ("report",)], ids=" ".join)
def test_names_with_lone_surrogates_are_printed_escaped(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    path = write_lines(tmp_path / "t.jsonl", _line_with_lone_surrogates())
    result = read(path, *command)
    assert result.code == 0
    assert b"\\udcff" in result.stdout
    result.stdout.decode("utf-8")


@pytest.mark.parametrize("command", [("show",), ("report",)], ids=" ".join)
def test_a_terminal_that_cannot_encode_a_name_gets_an_escape(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    line = request_line(
        span_json(
            "invoke_workflow 審査", attributes=[kv("gen_ai.agent.name", {"stringValue": "é"})]
        ),
        span_json("invoke_agent 倫理", span_id="c" * 16, parent="b" * 16),
    )
    path = write_lines(tmp_path / "t.jsonl", line)
    result = run_cli(*command, "--file", str(path), env={"PYTHONIOENCODING": "ascii"})
    assert_answered(result)
    assert result.code == 0
    assert b"\\u502b\\u7406" in result.stdout


def test_html_report_escapes_controls_and_lone_surrogates(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        _line_with_lone_surrogates(),
        _line_with_escapes_in_every_printed_field().replace("a" * 32, "f" * 32),
    )
    page_path = tmp_path / "report.html"
    for session in ((), ("--session", f"s{ESCAPES}")):
        result = run_cli("report", "--file", str(path), "--html", str(page_path), *session)
        assert_answered(result)
        assert result.code == 0
        page = page_path.read_bytes()
        page.decode("utf-8")
        assert not CONTROLS.search(page.replace(b"\n", b""))
        assert b"\\x1b" in page


@pytest.mark.parametrize(
    "command",
    [("show",), ("report",), ("replay", "--otlp-endpoint", "http://127.0.0.1:9")],
    ids=["show", "report", "replay"],
)
def test_messages_that_name_the_file_carry_no_control_sequences(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    missing = tmp_path / f"gone{ESCAPES}.jsonl"
    if command[0] == "replay":
        result = run_cli(*command[:1], str(missing), *command[1:])
    else:
        result = read(missing, *command)
    assert_answered(result)
    assert result.code == 2
    assert b"no such file" in result.stderr
    assert not CONTROLS.search(result.stdout + result.stderr.replace(b"\n", b""))


# -- the HTML report ------------------------------------------------------------------------------

INJECTION = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)><svg onload=alert(3)>"


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]


def test_html_report_lets_no_name_inject_markup(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    local_pipeline(path, resource_attributes={"team": INJECTION})
    try:
        with agent_trace.session(INJECTION, session_id=INJECTION, agents=[INJECTION]) as session:
            with session.turn(INJECTION, role=INJECTION):
                agent_trace.monitor_performance_target(INJECTION, 1.0, 5.0, unit=INJECTION)
            with session.consensus_round(INJECTION, participants=[INJECTION]) as rnd:
                rnd.vote(INJECTION, INJECTION, weight=2.0)
                rnd.vote("legal", "reject")
                rnd.conclude(decision=INJECTION)
            with session.policy_check(INJECTION) as check:
                check.violation(INJECTION, INJECTION, enforcement=INJECTION)
            try:
                with session.turn("failing"):
                    raise ValueError(INJECTION)
            except ValueError:
                pass
            session.set_outcome(INJECTION)
    finally:
        agent_trace.shutdown()
    for extra in ((), ("--session", INJECTION)):
        page_path = tmp_path / f"report{len(extra)}.html"
        result = run_cli("report", "--file", str(path), "--html", str(page_path), *extra)
        assert result.code == 0, result.stderr
        page = page_path.read_text(encoding="utf-8")
        elements = _Elements()
        elements.feed(page)
        assert not elements.tags & {"script", "img", "iframe", "object", "embed"}
        assert {"svg", "rect", "text"} <= elements.tags
        assert elements.handlers == []
        assert "&lt;script&gt;" in page


# -- malformed files ------------------------------------------------------------------------------

MALFORMED = {
    "not json": "{resourceSpans:",
    "not utf-8": b"\xff\xfe{}".decode("latin-1"),
    "a list": "[1, 2, 3]",
    "short trace id": request_line(span_json(trace_id="a" * 31)),
    "long span id": request_line(span_json(span_id="b" * 17)),
    "non-hex id": request_line(span_json(span_id="g" * 16)),
    "negative time": request_line(span_json(start=-5, end=10)),
    "ends before it starts": request_line(span_json(start=str(START_NS), end="1")),
    "name is a number": request_line(span_json(name=5)),  # type: ignore[arg-type]
    "attributes is a map": request_line(span_json(attributes={"a": 1})),  # type: ignore[arg-type]
    "kind is text": request_line(span_json(kind="SPAN_KIND_WEIRD")),
    "status is a list": request_line(span_json(status=[2])),
    "events not a list": request_line(span_json(events="boom")),
    "anyvalue with two kinds": request_line(
        span_json(attributes=[kv("n", {"intValue": "1", "stringValue": "x"})])
    ),
    "bytes not base64": request_line(span_json(attributes=[kv("b", {"bytesValue": "***"})])),
    "deep arrays": "{" + '"x":[' * 100_000 + "]" * 100_000 + "}",
}


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_malformed_lines_are_skipped_with_their_number(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    good = request_line(span_json("invoke_workflow good", span_id="c" * 16))
    path = write_lines(tmp_path / "t.jsonl", good, *MALFORMED.values())
    result = read(path, *command)
    assert_answered(result)
    assert result.code == 0
    assert f"{len(MALFORMED)} malformed line(s) skipped".encode() in result.stderr
    assert b"line 2 skipped" in result.stderr
    strict = read(path, *command, "--strict")
    assert_answered(strict)
    assert strict.code == 2


def test_reader_bounds_long_lines(tmp_path: Path) -> None:
    huge = request_line(
        span_json("invoke_workflow huge", attributes=[kv("x", {"stringValue": "y" * 10_000})])
    )
    path = write_lines(tmp_path / "t.jsonl", huge, request_line(span_json(span_id="c" * 16)))
    stream = iter_spans(path, max_line_bytes=1000)
    with stream:
        assert [s.span_id for s in stream] == ["c" * 16]
    assert stream.stats.problems[0].line == 1


def test_parent_cycles_are_drawn_once(tmp_path: Path) -> None:
    spans = [
        span_json(f"invoke_agent a{i}", span_id=f"{i + 1:016x}", parent=f"{(i + 1) % 50 + 1:016x}")
        for i in range(50)
    ]
    path = write_lines(tmp_path / "t.jsonl", request_line(*spans))
    result = read(path, "show", "--width", "200")
    assert result.code == 0
    lines = result.stdout.decode().splitlines()
    # A header of two lines and a blank one, then one row per span: none lost, none repeated.
    assert len(lines) == 3 + 50
    assert "50 spans" in lines[1]


def test_deep_parent_chain_is_drawn_in_bounded_time(tmp_path: Path) -> None:
    spans = [
        span_json(
            f"invoke_agent a{i}",
            span_id=f"{i + 1:016x}",
            parent=f"{i:016x}" if i else None,
            start=str(START_NS + i),
            end=str(START_NS + 10_000_000 - i),
        )
        for i in range(5000)
    ]
    path = write_lines(tmp_path / "t.jsonl", request_line(*spans))
    result = run_cli("show", "--file", str(path), timeout_s=60)
    assert result.code == 0
    assert result.stdout.count(b"\n") >= 5000


@pytest.mark.parametrize("trace_id", ["zz", "abc", "a" * 33, "../../etc/passwd", "\x1b[2J"])
def test_show_refuses_bad_trace_ids(tmp_path: Path, trace_id: str) -> None:
    path = write_lines(tmp_path / "t.jsonl", request_line(span_json()))
    result = run_cli("show", trace_id, "--file", str(path))
    assert_answered(result)
    assert result.code == 2
    assert b"\x1b" not in result.stderr


# -- replay ---------------------------------------------------------------------------------------


def test_replay_delivers_good_spans_beside_an_out_of_range_time(tmp_path: Path) -> None:
    good = [
        request_line(span_json(f"invoke_workflow good{i}", trace_id=f"{i + 1:032x}"))
        for i in range(3)
    ]
    bad = request_line(span_json("invoke_workflow bad", trace_id="f" * 32, start="1", end="9" * 30))
    path = write_lines(tmp_path / "t.jsonl", *good, bad)
    with OtlpHttpRecorder() as recorder:
        result = run_cli(
            "replay",
            str(path),
            "--otlp-endpoint",
            recorder.traces_url,
            "--otlp-protocol",
            "http",
            "--no-progress",
            "--timeout",
            "10",
        )
        names = {span.name for span in recorder.spans()}
    assert {"invoke_workflow good0", "invoke_workflow good1", "invoke_workflow good2"} <= names
    assert_answered(result)
    assert result.code == 0
    assert b"replayed 3 spans" in result.stdout
    assert b"skipped 1 malformed lines" in result.stdout
    assert b"line 4 skipped" in result.stderr
    assert b"beyond OTLP's 64-bit range" in result.stderr


def test_replay_scrubs_what_it_sends(tmp_path: Path) -> None:
    secret = "Zq9vLm2Xw8RtK4"
    line = request_line(
        span_json(
            attributes=[
                kv("password", {"stringValue": secret}),
                kv("callback", {"stringValue": f"https://a:{secret}@127.0.0.1/x"}),
            ]
        )
    )
    path = write_lines(tmp_path / "t.jsonl", line)
    with OtlpHttpRecorder() as recorder:
        result = run_cli(
            "replay",
            str(path),
            "--otlp-endpoint",
            recorder.traces_url,
            "--otlp-protocol",
            "http",
            "--no-progress",
        )
        body = b"".join(r.content for r in recorder.requests)
    assert result.code == 0
    assert b"invoke_workflow review" in body
    assert secret.encode() not in body


def test_replay_sends_names_with_lone_surrogates_mended(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        _line_with_lone_surrogates(),
        request_line(span_json("invoke_workflow plain", trace_id="e" * 32)),
    )
    with OtlpHttpRecorder() as recorder:
        result = run_cli(
            "replay",
            str(path),
            "--otlp-endpoint",
            recorder.traces_url,
            "--otlp-protocol",
            "http",
            "--no-progress",
            "--timeout",
            "10",
        )
        names = {span.name for span in recorder.spans()}
    assert_answered(result)
    assert result.code == 0, result.stderr
    assert names == {
        "invoke_workflow review\ufffd",
        "invoke_agent ethics\ufffd",
        "invoke_workflow plain",
    }
    assert b"replayed 3 spans" in result.stdout
    assert b"sent 2 spans with U+FFFD" in result.stdout

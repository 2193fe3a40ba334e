"""`agent-trace show`: draw one trace of a trace file as a waterfall tree in the terminal.

The file is streamed, never loaded whole: a first pass picks the trace (by id, by session, or
the one whose root span started last), a second pass collects that trace's spans only.

Exit codes: 0 the trace was drawn; 1 the file holds no spans, or no trace matches;
2 usage error, missing or unreadable file, or a malformed line with `--strict`.
"""

from __future__ import annotations

import argparse
import shutil
import string
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from agent_trace.cli._common import printable
from agent_trace.tracefile import (
    LineProblem,
    SpanRecord,
    TraceFileError,
    TreeRow,
    collect_trace,
    coordination_role,
    default_path,
    iter_spans,
    walk_tree,
)

__all__ = ["add_parser", "format_duration", "problem_printer", "render_trace", "run"]

EXIT_OK, EXIT_NO_DATA, EXIT_USAGE = 0, 1, 2
MAX_SPANS_DEFAULT = 5000
_PRINTED_PROBLEMS = 5
_MIN_PREFIX = 4
_HEX = frozenset(string.hexdigits)

CONVERSATION_ID = "gen_ai.conversation.id"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `show` on the `agent-trace` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "show",
        help="draw one trace as a waterfall tree",
        description=(
            "Draw one trace of a trace file as a waterfall tree: spans indented under their "
            "parent, durations, a bar placing each span in the trace, agents, votes, and "
            "violations (!!) and ERROR spans marked. Without an argument, shows the trace "
            "whose root span started last."
        ),
        epilog="Exit codes: 0 shown, 1 no spans or no such trace, 2 usage or unreadable file.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "trace_id",
        nargs="?",
        help=f"trace id, or a unique prefix of at least {_MIN_PREFIX} hex digits",
    )
    which.add_argument(
        "--last", action="store_true", help="the trace whose root span started last (default)"
    )
    which.add_argument("--session", metavar="ID", help="the trace of this session id")
    parser.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="trace file (default: $AGENT_TRACE_LOCAL_PATH or .agent-trace/traces.jsonl)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse a file with a malformed line (exit 2); by default such a line is skipped "
        "and named on stderr with its number",
    )
    parser.add_argument("--width", type=int, metavar="COLUMNS", help="output width")
    parser.add_argument("--ascii", action="store_true", help="draw with ASCII characters only")
    parser.add_argument(
        "--max-spans",
        type=int,
        default=MAX_SPANS_DEFAULT,
        metavar="N",
        help=f"draw at most N spans of the trace (default {MAX_SPANS_DEFAULT})",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `agent-trace show` with parsed arguments; returns the exit code."""
    out, err = sys.stdout, sys.stderr
    path: Path = args.file if args.file is not None else default_path()
    trace_id = (args.trace_id or "").lower()
    if trace_id and (set(trace_id) - _HEX or not _MIN_PREFIX <= len(trace_id) <= 32):
        _error(err, f"{args.trace_id!r} is not a trace id: give 4 to 32 hex digits")
        return EXIT_USAGE
    if args.max_spans < 1:
        _error(err, "--max-spans must be at least 1")
        return EXIT_USAGE
    if args.width is not None and args.width < 1:
        _error(err, "--width must be at least 1 column (leave it out to use the terminal's)")
        return EXIT_USAGE

    try:
        found = _find_trace(path, trace_id, args.session, args.strict, err)
        if isinstance(found, int):
            return found
        # A full id needs no first pass: then this pass is the one that reports bad lines.
        first_pass = len(trace_id) != 32
        spans, left_out = collect_trace(
            path,
            found,
            strict=args.strict,
            max_spans=args.max_spans,
            on_problem=None if first_pass else problem_printer("show", err),
            checked=first_pass,
        )
    except TraceFileError as exc:
        _error(err, str(exc))
        return EXIT_USAGE
    if not spans:
        _error(err, f"no spans of trace {found} in {path}")
        return EXIT_NO_DATA

    ascii_only = args.ascii or not _can_encode(out, "█│├└─µ")
    width = args.width or shutil.get_terminal_size((120, 24)).columns
    for line in render_trace(spans, width=width, ascii_only=ascii_only):
        out.write(line + "\n")
    if left_out:
        out.write(f"... {left_out} more spans of this trace not drawn (raise --max-spans)\n")
    return EXIT_OK


def problem_printer(command: str, stream: TextIO) -> Callable[[LineProblem], None]:
    """A lenient-mode `on_problem` that prints the first few skipped lines to `stream`."""
    printed = 0

    def show_problem(problem: LineProblem) -> None:
        nonlocal printed
        printed += 1
        if printed <= _PRINTED_PROBLEMS:
            reason = printable(problem.reason)
            stream.write(f"agent-trace {command}: line {problem.line} skipped: {reason}\n")
        elif printed == _PRINTED_PROBLEMS + 1:
            stream.write(f"agent-trace {command}: more malformed lines skipped\n")

    return show_problem


def _error(err: TextIO, message: str) -> None:
    err.write(f"agent-trace show: {printable(message)}\n")


def _find_trace(
    path: Path, trace_id: str, session: str | None, strict: bool, err: TextIO
) -> str | int:
    """First pass: the trace id to draw, or an exit code after explaining why there is none."""
    if len(trace_id) == 32:
        return trace_id

    prefix_matches: list[str] = []
    session_root: str | None = None
    session_any: str | None = None
    latest_root: tuple[int, str] | None = None
    latest_any: tuple[int, str] | None = None
    stream = iter_spans(path, strict=strict, on_problem=problem_printer("show", err))
    with stream:
        for span in stream:
            if trace_id:
                # Two distinct matches already make the prefix ambiguous; keep no more.
                if span.trace_id.startswith(trace_id) and span.trace_id not in prefix_matches:
                    prefix_matches.append(span.trace_id)
                    if len(prefix_matches) > 1:
                        break
            elif session is not None:
                if span.attributes.get(CONVERSATION_ID) != session:
                    continue
                session_any = session_any or span.trace_id
                if span.parent_span_id is None and coordination_role(span) == "session":
                    session_root = span.trace_id
                    break
            else:
                if latest_any is None or span.start_ns > latest_any[0]:
                    latest_any = (span.start_ns, span.trace_id)
                if span.parent_span_id is None and (
                    latest_root is None or span.start_ns > latest_root[0]
                ):
                    latest_root = (span.start_ns, span.trace_id)
    if stream.stats.skipped_lines:
        _error(err, f"{stream.stats.skipped_lines} malformed line(s) skipped in {path}")

    if trace_id:
        if len(prefix_matches) > 1:
            _error(err, f"trace id prefix {trace_id!r} is ambiguous: {', '.join(prefix_matches)}")
            return EXIT_USAGE
        if not prefix_matches:
            _error(err, f"no trace {trace_id!r} in {path}")
            return EXIT_NO_DATA
        return prefix_matches[0]
    if session is not None:
        found = session_root or session_any
        if found is None:
            _error(err, f"no session {session!r} in {path}")
            return EXIT_NO_DATA
        return found
    latest = latest_root or latest_any
    if latest is None:
        _error(err, f"no spans in {path}")
        return EXIT_NO_DATA
    return latest[1]


def _can_encode(stream: TextIO, sample: str) -> bool:
    try:
        sample.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# --- drawing ---


class _Glyphs(NamedTuple):
    branch: str
    last: str
    pipe: str
    space: str
    bar: str
    empty: str
    edge: str
    micro: str


_UNICODE = _Glyphs("├─ ", "└─ ", "│  ", "   ", "█", " ", "│", "µs")
_ASCII = _Glyphs("|- ", "`- ", "|  ", "   ", "#", " ", "|", "us")
_NAME_WIDTH_MAX = 56
_BAR_WIDTH_MIN, _BAR_WIDTH_MAX = 10, 60
_DETAIL_ROOM = 36


def format_duration(duration_ns: int, micro: str = "µs") -> str:
    """A duration for people: `850 µs`, `12.30 ms`, `1.234 s`, `75.0 s`."""
    if duration_ns < 1_000_000:
        return f"{duration_ns / 1_000:.0f} {micro}"
    if duration_ns < 1_000_000_000:
        return f"{duration_ns / 1_000_000:.2f} ms"
    if duration_ns < 60_000_000_000:
        return f"{duration_ns / 1_000_000_000:.3f} s"
    try:
        return f"{duration_ns / 1_000_000_000:.1f} s"
    except OverflowError:
        return f"{_long_int(duration_ns // 1_000_000_000)} s"


def render_trace(
    spans: Sequence[SpanRecord], *, width: int = 120, ascii_only: bool = False
) -> list[str]:
    """Draw the spans of one trace as lines of text: a header, then one row per span.

    Rows are in tree order (depth first, children by start time) and indented three columns
    per level under their parent. Text from the spans is passed through `printable`: the lines
    hold no control characters.
    """
    glyphs = _ASCII if ascii_only else _UNICODE
    rows = list(walk_tree(spans))
    t0 = min(span.start_ns for span in spans)
    t1 = max(span.end_ns for span in spans)
    total = max(t1 - t0, 1)

    labels = [_tree_prefix(row, glyphs) + printable(row.span.name) for row in rows]
    name_width = min(max(len(label) for label in labels), _NAME_WIDTH_MAX)
    bar_width = width - name_width - 10 - 4 - _DETAIL_ROOM
    bar_width = max(_BAR_WIDTH_MIN, min(_BAR_WIDTH_MAX, bar_width))

    lines = _header(spans, rows, t0, total, glyphs)
    for row, label in zip(rows, labels, strict=True):
        span = row.span
        if len(label) > name_width:
            label = label[: name_width - 3] + "..."
        duration = format_duration(span.duration_ns, glyphs.micro)
        bar = _bar(span.start_ns - t0, span.end_ns - t0, total, bar_width, glyphs)
        details = printable("  ".join(_details(row, glyphs)))
        lines.append(f"{label:<{name_width}} {duration:>10} {bar} {details}".rstrip())
    return lines


def _tree_prefix(row: TreeRow, glyphs: _Glyphs) -> str:
    if row.depth == 0:
        return ""
    # ancestors_last[0] is the root's own flag: roots draw no connector, so no column.
    columns = [glyphs.space if last else glyphs.pipe for last in row.ancestors_last[1:]]
    columns.append(glyphs.last if row.last else glyphs.branch)
    return "".join(columns)


def _bar(start: int, end: int, total: int, width: int, glyphs: _Glyphs) -> str:
    first = min(int(start * width / total), width - 1)
    # Ceiling division: a span that ends inside a cell fills it, and every span gets a cell.
    stop = max(first + 1, min(width, -(-end * width // total)))
    cells = glyphs.empty * first + glyphs.bar * (stop - first) + glyphs.empty * (width - stop)
    return f"{glyphs.edge}{cells}{glyphs.edge}"


def _header(
    spans: Sequence[SpanRecord], rows: list[TreeRow], t0: int, total: int, glyphs: _Glyphs
) -> list[str]:
    root = rows[0].span
    parts = [f"trace {root.trace_id}"]
    session = root.attributes.get(CONVERSATION_ID)
    if session is not None:
        parts.append(f"session {session}")
    task = root.attributes.get("agent_trace.session.task_type")
    if task is not None:
        parts.append(str(task))
    outcome = root.attributes.get("agent_trace.session.outcome")
    if outcome is not None:
        parts.append(f"outcome {outcome}")

    violations = sum(1 for s in spans if _is_violation(s))
    errors = sum(1 for s in spans if s.is_error)
    breaches = sum(1 for s in spans if s.attributes.get("agent_trace.target.met") is False)
    facts = [
        f"started {_utc(t0)}",
        f"total {format_duration(total, glyphs.micro)}",
        f"{len(spans)} span{'s' if len(spans) != 1 else ''}",
        f"{violations} violation{'s' if violations != 1 else ''}",
        f"{errors} error{'s' if errors != 1 else ''}",
    ]
    if breaches:
        facts.append(f"{breaches} target{'s' if breaches != 1 else ''} missed")
    service = root.resource.get("service.name")
    if service is not None:
        facts.insert(0, f"service {service}")
    return [printable("  ".join(parts)), printable("  ".join(facts)), ""]


def _utc(ns: int) -> str:
    try:
        moment = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        # Past year 9999 (or the platform's time_t): no calendar date, the raw figure.
        return f"{_long_int(ns)} ns after the epoch"
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _is_violation(span: SpanRecord) -> bool:
    return span.attributes.get("agent_trace.compliance.result") == "violation"


def _details(row: TreeRow, glyphs: _Glyphs) -> list[str]:
    """The words after the bar: what the span decided, and marks for what went wrong."""
    span = row.span
    attrs = span.attributes
    role = coordination_role(span)
    found: list[str] = []
    if role == "session":
        found += _pairs(attrs, ("agent_trace.session.outcome", "outcome"))
    elif role == "turn":
        found += _pairs(attrs, ("gen_ai.agent.name", "agent"), ("agent_trace.agent.role", "role"))
    elif role == "round":
        found.append(_round_details(attrs))
    elif role == "vote":
        found.append(_vote_details(attrs))
    elif role == "check":
        found.append(_check_details(attrs))
    elif role == "handoff":
        found += _pairs(attrs, ("agent_trace.handoff.reason", "reason"))
    elif role == "conflict":
        found += _pairs(
            attrs, ("agent_trace.conflict.parties", "parties"), ("agent_trace.conflict.outcome", "")
        )
    elif role == "escalation":
        found += _pairs(
            attrs,
            ("agent_trace.escalation.severity", "severity"),
            ("agent_trace.escalation.outcome", "outcome"),
        )

    target = attrs.get("agent_trace.target.name")
    if target is not None:
        measured = _target_figures(attrs)
        if attrs.get("agent_trace.target.met") is False:
            found.append(f"!! target {target} missed{measured}")
        else:
            found.append(f"target {target} met{measured}")
    if span.is_error:
        found.append(_error_details(span))
    if row.orphan:
        found.append(f"(parent {span.parent_span_id} not in file)")
    return [text for text in found if text]


def _pairs(attrs: dict[str, Any], *wanted: tuple[str, str]) -> list[str]:
    shown = []
    for key, label in wanted:
        value = attrs.get(key)
        if value is None:
            continue
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        shown.append(f"{label}={text}" if label else text)
    return shown


def _round_details(attrs: dict[str, Any]) -> str:
    prefix = "agent_trace.consensus."
    words = []
    number = attrs.get(prefix + "round")
    if number is not None:
        words.append(f"round {number}:")
    outcome = attrs.get(prefix + "outcome")
    if outcome is not None:
        words.append(str(outcome))
    agreement = attrs.get(prefix + "agreement")
    if isinstance(agreement, (int, float)):
        words.append(f"agreement {_number(agreement, '.2f')}")
    tally = [
        f"{label} {attrs[prefix + key]}"
        for key, label in (("votes.for", "for"), ("votes.against", "against"))
        if attrs.get(prefix + key) is not None
    ]
    if attrs.get(prefix + "votes.abstain"):
        tally.append(f"abstain {attrs[prefix + 'votes.abstain']}")
    if tally:
        words.append("(" + ", ".join(tally) + ")")
    return " ".join(words)


def _vote_details(attrs: dict[str, Any]) -> str:
    value = attrs.get("agent_trace.vote.value")
    if value is None:
        return ""
    words = [f"vote={value}"]
    weight = attrs.get("agent_trace.vote.weight")
    if isinstance(weight, (int, float)) and weight != 1:
        words.append(f"weight {_number(weight)}")
    confidence = attrs.get("agent_trace.vote.confidence")
    if isinstance(confidence, (int, float)):
        words.append(f"confidence {_number(confidence, '.2f')}")
    return " ".join(words)


def _check_details(attrs: dict[str, Any]) -> str:
    prefix = "agent_trace.compliance."
    result = attrs.get(prefix + "result")
    if result == "violation":
        kind = attrs.get(prefix + "violation.type") or attrs.get(prefix + "policy") or "?"
        severity = attrs.get(prefix + "severity") or "?"
        text = f"!! violation {kind}/{severity}"
        enforcement = attrs.get(prefix + "enforcement")
        return f"{text} ({enforcement})" if enforcement else text
    if result == "error":
        return "!! check failed to run"
    return str(result) if result is not None else ""


def _target_figures(attrs: dict[str, Any]) -> str:
    actual = attrs.get("agent_trace.target.actual")
    threshold = attrs.get("agent_trace.target.threshold")
    if actual is None or threshold is None:
        return ""
    unit = attrs.get("agent_trace.target.unit")
    suffix = f" {unit}" if unit else ""
    return f" (actual {_number(actual)}{suffix}, target {_number(threshold)}{suffix})"


def _number(value: Any, spec: str = "g") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except OverflowError:
            # An integer beyond a float's range: float formats cannot take it.
            return _long_int(int(value))
    return str(value)


def _long_int(value: int) -> str:
    try:
        return str(value)
    except ValueError:
        # Longer than sys.get_int_max_str_digits() digits.
        return f"<integer of {value.bit_length()} bits>"


def _error_details(span: SpanRecord) -> str:
    kind = span.attributes.get("error.type")
    message = span.status_message
    if not message:
        for event in span.events:
            if event.name == "exception":
                message = str(event.attributes.get("exception.message") or "")
                kind = kind or event.attributes.get("exception.type")
                break
    words = "!! ERROR"
    if kind:
        words += f" {kind}"
    if message:
        words += f": {message}"
    return words

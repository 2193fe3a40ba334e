"""Read a trace file of OTLP JSON lines one line at a time, with bounded memory.

This is the reading side of the local file sink (and of the OpenTelemetry Collector's file
exporter): each line is one `ExportTraceServiceRequest` in OTLP/JSON. `iter_spans` turns the
file into a stream of small `SpanRecord` tuples; only one line is held in memory at a time.

The malformed-line policy:

- A line is the unit: it is decoded completely before any of its spans is yielded, so a bad
  line contributes no spans at all. Blank lines are ignored.
- A number is part of a line's shape: times are unsigned 64-bit nanoseconds, `intValue`s
  signed 64-bit integers, in ASCII digits; anything else (`"²"`, `"--1"`, 5,000 digits, a
  `doubleValue` beyond a double) makes the line malformed.
- Lenient mode (the default): a line that is not valid JSON, not UTF-8, not shaped like an
  export request, or longer than `max_line_bytes` is skipped. It is counted in
  `SpanStream.stats` (`skipped_lines`, and the first `MAX_KEPT_PROBLEMS` as `LineProblem`
  entries with the 1-based line number and the reason) and passed to `on_problem`; the
  default `on_problem` logs a WARNING for the first few problems only.
- Strict mode (`strict=True`): the first malformed line raises `TraceFileError` carrying the
  line number and the reason. Spans of earlier lines have already been yielded.
- A missing or unreadable file raises `TraceFileError` when `iter_spans` is called.

Reading never raises anything but `TraceFileError` for problems with the file's content.

Example:
    >>> stream = iter_spans(".agent-trace/traces.jsonl")
    >>> with stream:
    ...     slow = [s.name for s in stream if s.duration_ns > 1_000_000_000]
    >>> stream.stats.skipped_lines
    0
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NamedTuple

from agent_trace._config import DEFAULT_LOCAL_PATH

__all__ = [
    "MAX_KEPT_PROBLEMS",
    "MAX_LINE_BYTES",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNSET",
    "LineProblem",
    "ReadStats",
    "SpanEvent",
    "SpanRecord",
    "SpanStream",
    "TraceFileError",
    "TreeRow",
    "collect_trace",
    "coordination_role",
    "default_path",
    "iter_spans",
    "walk_tree",
]

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest line accepted; a longer one is a malformed line (and is never held whole)."""

MAX_KEPT_PROBLEMS = 20
"""How many `LineProblem` entries `ReadStats.problems` keeps; all are counted."""

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

# OTLP's ranges: times are fixed64 nanoseconds, intValue is int64.
_TIME_LIMIT = 2**64
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_SPECIAL_DOUBLES = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}

# OTLP/JSON readers must accept the proto field names as well as lowerCamelCase.
_ANY_VALUE_KINDS = {
    "stringValue": "string",
    "string_value": "string",
    "boolValue": "bool",
    "bool_value": "bool",
    "intValue": "int",
    "int_value": "int",
    "doubleValue": "double",
    "double_value": "double",
    "arrayValue": "array",
    "array_value": "array",
    "kvlistValue": "kvlist",
    "kvlist_value": "kvlist",
    "bytesValue": "bytes",
    "bytes_value": "bytes",
}


class TraceFileError(Exception):
    """A trace file cannot be read: it is missing or unreadable, or (strict mode) a line is bad.

    Attributes:
        path: the file.
        line: the 1-based number of the bad line, or `None` when the whole file is the problem.
        reason: what is wrong, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, line: int | None = None):
        self.path = str(path)
        self.reason = reason
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class LineProblem:
    """One malformed line: its 1-based number and why it was not read."""

    line: int
    reason: str


@dataclass
class ReadStats:
    """What a `SpanStream` has read so far.

    Attributes:
        lines: non-blank lines read.
        spans: spans yielded.
        skipped_lines: malformed lines skipped (lenient mode).
        problems: the first `MAX_KEPT_PROBLEMS` skipped lines with their reasons.
    """

    lines: int = 0
    spans: int = 0
    skipped_lines: int = 0
    problems: list[LineProblem] = field(default_factory=list)


class SpanEvent(NamedTuple):
    """A span event: name, time in unix nanoseconds, decoded attributes."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


class SpanRecord(NamedTuple):
    """One span as read from a trace file.

    Ids are lowercase hex. Attribute values are OTLP `AnyValue`s decoded to Python: `str`,
    `bool`, `int`, `float`, `bytes`, `list` (arrayValue), `dict` (kvlistValue) or `None`.
    `resource` is shared by all spans of the same `resourceSpans` entry; treat it as read-only.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: tuple[SpanEvent, ...]
    status_code: int
    status_message: str
    resource: Mapping[str, Any]
    line: int

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def is_error(self) -> bool:
        return self.status_code == STATUS_ERROR


class _Malformed(Exception):
    """Raised inside the decoder; becomes a `LineProblem` or a `TraceFileError`."""


ProblemHandler = Callable[[LineProblem], None]


def _log_problem_factory() -> ProblemHandler:
    logged = 0

    def log_problem(problem: LineProblem) -> None:
        # A broken file can have a million bad lines: log a few, the stats count them all.
        nonlocal logged
        logged += 1
        if logged <= 5:
            logger.warning("trace file line %d skipped: %s", problem.line, problem.reason)
        elif logged == 6:
            logger.warning("further malformed lines are skipped without a warning")

    return log_problem


class SpanStream:
    """An iterator over the spans of one trace file; `stats` fills in while it is consumed.

    The file is opened by the constructor (so a missing file fails at once) and closed when
    the iteration ends, on `close()`, or on leaving a `with` block. Iterate it once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        strict: bool = False,
        on_problem: ProblemHandler | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        containing: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.strict = strict
        self.stats = ReadStats()
        self._on_problem = on_problem if on_problem is not None else _log_problem_factory()
        self._max_line_bytes = max_line_bytes
        self._containing = (
            re.compile(re.escape(containing.encode("ascii")), re.IGNORECASE)
            if containing is not None
            else None
        )
        self._file = _open(self.path)
        self._spans = self._read(self._file)

    def __iter__(self) -> SpanStream:
        return self

    def __next__(self) -> SpanRecord:
        return next(self._spans)

    def __enter__(self) -> SpanStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and close the file."""
        self._spans.close()
        self._file.close()

    def _read(self, file: BinaryIO) -> Generator[SpanRecord, None, None]:
        with file:
            for number, raw in _numbered_lines(file, self._max_line_bytes, self.path):
                if raw is None:
                    self._problem(number, f"line longer than {self._max_line_bytes} bytes")
                    continue
                if raw.isspace():
                    continue
                # A byte search costs a sliver of a JSON parse: second passes skim this way.
                if self._containing is not None and self._containing.search(raw) is None:
                    continue
                self.stats.lines += 1
                try:
                    spans = _decode_line(raw, number)
                except _Malformed as exc:
                    self._problem(number, str(exc))
                    continue
                self.stats.spans += len(spans)
                yield from spans

    def _problem(self, number: int, reason: str) -> None:
        if self.strict:
            raise TraceFileError(self.path, reason, number)
        self.stats.skipped_lines += 1
        problem = LineProblem(number, reason)
        if len(self.stats.problems) < MAX_KEPT_PROBLEMS:
            self.stats.problems.append(problem)
        self._on_problem(problem)


def iter_spans(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    on_problem: ProblemHandler | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    containing: str | None = None,
) -> SpanStream:
    """Stream the spans of a trace file of OTLP JSON lines.

    Args:
        path: the trace file, e.g. `.agent-trace/traces.jsonl`.
        strict: raise `TraceFileError` at the first malformed line instead of skipping it.
        on_problem: called with each skipped line (lenient mode); by default the first few
            are logged at WARNING.
        max_line_bytes: longest line read; a longer one is malformed.
        containing: decode only the lines whose bytes contain this ASCII text (any case);
            the other lines are passed over unread, so neither checked nor counted. For a
            second pass over a file whose lines a first pass already checked.

    Returns:
        A `SpanStream`: iterate it for `SpanRecord`s, read `.stats` for what was skipped.

    Raises:
        TraceFileError: the file is missing or unreadable (now), or a line is malformed in
            strict mode (during iteration).
    """
    return SpanStream(
        path,
        strict=strict,
        on_problem=on_problem,
        max_line_bytes=max_line_bytes,
        containing=containing,
    )


def default_path() -> Path:
    """The file the local sink writes when nothing else is configured.

    `AGENT_TRACE_LOCAL_PATH` when set, else `.agent-trace/traces.jsonl` (as `configure()`).
    """
    configured = os.environ.get("AGENT_TRACE_LOCAL_PATH")
    return Path(configured) if configured else DEFAULT_LOCAL_PATH


def collect_trace(
    path: str | os.PathLike[str],
    trace_id: str,
    *,
    strict: bool = False,
    max_spans: int = 5000,
    on_problem: ProblemHandler | None = None,
    checked: bool = False,
) -> tuple[list[SpanRecord], int]:
    """Stream the file once and keep the spans of one trace.

    Args:
        path: the trace file.
        trace_id: 32 lowercase hex digits.
        strict: raise `TraceFileError` at the first malformed line instead of skipping it.
        max_spans: keep at most this many spans.
        on_problem: called with each skipped line; by default they are skipped silently.
        checked: a first pass already read every line (and reported the bad ones), so only
            lines that mention `trace_id` are decoded: several times faster.

    Returns:
        The trace's spans in file order (at most `max_spans`) and how many more were left out.
    """
    spans: list[SpanRecord] = []
    left_out = 0
    stream = iter_spans(
        path,
        strict=strict,
        on_problem=on_problem if on_problem is not None else _ignore_problem,
        containing=trace_id if checked else None,
    )
    with stream:
        for span in stream:
            if span.trace_id != trace_id:
                continue
            if len(spans) < max_spans:
                spans.append(span)
            else:
                left_out += 1
    return spans, left_out


def _ignore_problem(problem: LineProblem) -> None:
    del problem


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise TraceFileError(path, "no such file") from None
    except IsADirectoryError:
        raise TraceFileError(path, "is a directory, not a trace file") from None
    except PermissionError:
        raise TraceFileError(path, "permission denied") from None
    except OSError as exc:
        raise TraceFileError(path, f"cannot open: {exc.strerror or exc}") from None


def _numbered_lines(file: BinaryIO, limit: int, path: Path) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, bytes); `None` stands for a line over `limit`, never read whole."""
    number = 0
    while True:
        try:
            raw = file.readline(limit + 1)
        except OSError as exc:
            raise TraceFileError(path, f"read failed: {exc.strerror or exc}", number + 1) from None
        if not raw:
            return
        number += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            _skip_rest_of_line(file)
            yield number, None
            continue
        yield number, raw


def _skip_rest_of_line(file: BinaryIO) -> None:
    while True:
        chunk = file.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return


def _decode_line(raw: bytes, number: int) -> list[SpanRecord]:
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError:
        raise _Malformed("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _Malformed(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError:
        # json.loads refuses integers longer than sys.get_int_max_str_digits() this way.
        raise _Malformed("a number too long to read") from None
    except RecursionError:
        raise _Malformed("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise _Malformed(f"expected a JSON object, found {_json_type(doc)}")
    try:
        return _request_spans(doc, number)
    except RecursionError:
        # Nesting json.loads accepted can still be too deep for the recursive AnyValue decoder.
        raise _Malformed("values nested too deeply") from None


def _request_spans(doc: dict[str, Any], number: int) -> list[SpanRecord]:
    resource_spans = _field(doc, "resourceSpans", "resource_spans")
    if resource_spans is None:
        raise _Malformed("not a trace export request (no resourceSpans)")
    spans: list[SpanRecord] = []
    for i, entry in enumerate(_list(resource_spans, "resourceSpans")):
        where = f"resourceSpans[{i}]"
        _object(entry, where)
        resource = _field(entry, "resource") or {}
        _object(resource, f"{where}.resource")
        resource_attrs = _attributes(_field(resource, "attributes"), f"{where}.resource")
        scope_spans = _field(entry, "scopeSpans", "scope_spans") or []
        for j, scope in enumerate(_list(scope_spans, f"{where}.scopeSpans")):
            scope_where = f"{where}.scopeSpans[{j}]"
            _object(scope, scope_where)
            for k, span in enumerate(_list(_field(scope, "spans") or [], f"{scope_where}.spans")):
                spans.append(_span(span, f"{scope_where}.spans[{k}]", resource_attrs, number))
    return spans


def _span(span: Any, where: str, resource: Mapping[str, Any], number: int) -> SpanRecord:
    _object(span, where)
    trace_id = _hex_id(_field(span, "traceId", "trace_id"), _HEX32, 32, f"{where}.traceId")
    span_id = _hex_id(_field(span, "spanId", "span_id"), _HEX16, 16, f"{where}.spanId")
    parent = _field(span, "parentSpanId", "parent_span_id")
    parent_id = _hex_id(parent, _HEX16, 16, f"{where}.parentSpanId") if parent else None
    name = _field(span, "name")
    if name is None:
        name = ""
    elif not isinstance(name, str):
        raise _Malformed(f"{where}.name: expected a string, found {_json_type(name)}")
    start = _nanos(_field(span, "startTimeUnixNano", "start_time_unix_nano"), f"{where}.start")
    end = _nanos(_field(span, "endTimeUnixNano", "end_time_unix_nano"), f"{where}.end")
    if end < start:
        raise _Malformed(f"{where}: span ends before it starts")
    status = _field(span, "status") or {}
    _object(status, f"{where}.status")
    message = _field(status, "message") or ""
    if not isinstance(message, str):
        raise _Malformed(f"{where}.status.message: expected a string")
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_id,
        name=name,
        kind=_enum(_field(span, "kind"), _KIND_NAMES, f"{where}.kind"),
        start_ns=start,
        end_ns=end,
        attributes=_attributes(_field(span, "attributes"), where),
        events=_events(_field(span, "events"), where),
        status_code=_enum(_field(status, "code"), _STATUS_NAMES, f"{where}.status.code"),
        status_message=message,
        resource=resource,
        line=number,
    )


def _events(raw: Any, where: str) -> tuple[SpanEvent, ...]:
    if not raw:
        return ()
    events = []
    for i, event in enumerate(_list(raw, f"{where}.events")):
        at = f"{where}.events[{i}]"
        _object(event, at)
        name = _field(event, "name") or ""
        if not isinstance(name, str):
            raise _Malformed(f"{at}.name: expected a string")
        time_ns = _nanos(_field(event, "timeUnixNano", "time_unix_nano"), f"{at}.time")
        events.append(SpanEvent(name, time_ns, _attributes(_field(event, "attributes"), at)))
    return tuple(events)


def _attributes(raw: Any, where: str) -> dict[str, Any]:
    if not raw:
        return {}
    decoded: dict[str, Any] = {}
    for pair in _list(raw, f"{where}.attributes"):
        if not isinstance(pair, dict) or not isinstance(pair.get("key"), str):
            raise _Malformed(f"{where}.attributes: an entry has no string 'key'")
        key = pair["key"]
        decoded[key] = _any_value(pair.get("value"), f"{where}.attributes[{key!r}]")
    return decoded


def _any_value(value: Any, where: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Malformed(f"{where}: expected an AnyValue object, found {_json_type(value)}")
    if not value:
        return None
    if len(value) != 1:
        raise _Malformed(f"{where}: an AnyValue holds exactly one of its kinds")
    ((key, raw),) = value.items()
    kind = _ANY_VALUE_KINDS.get(key)
    if kind == "string" and isinstance(raw, str):
        return raw
    if kind == "bool" and isinstance(raw, bool):
        return raw
    if kind == "int":
        # int64 travels as a decimal string in OTLP/JSON; some writers emit a number.
        number = _int64(raw)
        if number is None:
            raise _Malformed(f"{where}: {key} {_short(raw)} is not a 64-bit integer")
        return number
    if kind == "double":
        if isinstance(raw, float):
            return raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            try:
                return float(raw)
            except OverflowError:
                raise _Malformed(f"{where}: doubleValue beyond the range of a double") from None
        if isinstance(raw, str) and raw in _SPECIAL_DOUBLES:
            return _SPECIAL_DOUBLES[raw]
    if kind == "array" and isinstance(raw, dict):
        values = _field(raw, "values") or []
        return [_any_value(v, f"{where}[{i}]") for i, v in enumerate(_list(values, where))]
    if kind == "kvlist" and isinstance(raw, dict):
        return _attributes(_field(raw, "values"), where)
    if kind == "bytes" and isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise _Malformed(f"{where}: bytesValue is not base64") from None
    if kind is None:
        raise _Malformed(f"{where}: unknown AnyValue kind {key!r}")
    raise _Malformed(f"{where}: {key} holds {_json_type(raw)} {_short(raw)}")


def _field(obj: Mapping[str, Any], camel: str, snake: str | None = None) -> Any:
    value = obj.get(camel)
    if value is None and snake is not None:
        value = obj.get(snake)
    return value


def _object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise _Malformed(f"{where}: expected an object, found {_json_type(value)}")


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Malformed(f"{where}: expected a list, found {_json_type(value)}")
    return value


def _hex_id(value: Any, pattern: re.Pattern[str], digits: int, where: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _Malformed(f"{where}: expected {digits} hex digits, found {_short(value)}")
    return value.lower()


def _int64(raw: Any) -> int | None:
    """`raw` as an OTLP intValue (a decimal string or a JSON number), or None."""
    if isinstance(raw, str):
        # The common case, settled in three checks: 18 ASCII digits always fit an int64.
        if len(raw) <= 18 and raw.isdigit() and raw.isascii():
            return int(raw)
        negative = raw.startswith("-")
        digits = raw[1:] if negative else raw
        # isdigit() alone admits "²" and other digits int() refuses. Past 19 significant
        # digits no int64 is left, so int() never meets a string long enough to refuse.
        if not (digits.isascii() and digits.isdigit()):
            return None
        digits = digits.lstrip("0") or "0"
        if len(digits) > 19:
            return None
        raw = -int(digits) if negative else int(digits)
    elif not isinstance(raw, int) or isinstance(raw, bool):
        return None
    return raw if _INT_MIN <= raw <= _INT_MAX else None


def _nanos(value: Any, where: str) -> int:
    # The common case first: 19 ASCII digits always fit the 64-bit range.
    if isinstance(value, str) and len(value) <= 19 and value.isdigit() and value.isascii():
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        # Past 20 significant digits the time is out of range: int() never sees them.
        digits = value if len(value) <= 20 else value.lstrip("0") or "0"
        number = int(digits) if len(digits) <= 20 else _TIME_LIMIT
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        number = value
    elif value is None:
        raise _Malformed(f"{where}: missing time")
    else:
        raise _Malformed(f"{where}: expected unix nanoseconds, found {_short(value)}")
    if number >= _TIME_LIMIT:
        raise _Malformed(f"{where}: {_short(value)} ns is beyond OTLP's 64-bit range")
    return number


def _enum(value: Any, names: Mapping[str, int], where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    if isinstance(value, str) and value in names:
        return names[value]
    raise _Malformed(f"{where}: unknown value {_short(value)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- What a span is in the coordination model, and how spans of one trace form a tree. ---

# `sentry.op` is set on every span agent-trace writes; the name prefix covers spans that
# come from elsewhere (an older writer, a hand-made file) with the same naming.
_ROLE_BY_OP = {
    "agent_trace.session": "session",
    "gen_ai.invoke_agent": "turn",
    "agent_trace.consensus.round": "round",
    "agent_trace.vote": "vote",
    "agent_trace.compliance.check": "check",
    "gen_ai.handoff": "handoff",
    "agent_trace.conflict": "conflict",
    "agent_trace.escalation": "escalation",
    "agent_trace.message": "message",
}
_ROLE_BY_PREFIX = (
    ("invoke_workflow ", "session"),
    ("invoke_agent ", "turn"),
    ("consensus_round ", "round"),
    ("vote ", "vote"),
    ("policy_check ", "check"),
    ("handoff ", "handoff"),
    ("resolve_conflict ", "conflict"),
    ("escalate ", "escalation"),
    ("send ", "message"),
    ("process ", "message"),
)


def coordination_role(span: SpanRecord) -> str | None:
    """Which part of the coordination model a span records.

    Returns:
        One of "session", "turn", "round", "vote", "check", "handoff", "conflict",
        "escalation", "message", or `None` for any other span.
    """
    op = span.attributes.get("sentry.op")
    if isinstance(op, str) and op in _ROLE_BY_OP:
        return _ROLE_BY_OP[op]
    for prefix, prefix_role in _ROLE_BY_PREFIX:
        if span.name.startswith(prefix):
            return prefix_role
    return None


class TreeRow(NamedTuple):
    """One span in tree order.

    Attributes:
        span: the span.
        depth: 0 for a root.
        last: whether it is the last child of its parent (or the last root).
        ancestors_last: `last` of each ancestor from the root down, for drawing tree lines.
        orphan: a root only because its parent is not among the spans given.
    """

    span: SpanRecord
    depth: int
    last: bool
    ancestors_last: tuple[bool, ...]
    orphan: bool


def walk_tree(spans: Sequence[SpanRecord]) -> Iterator[TreeRow]:
    """Order the spans of one trace depth-first, children by start time.

    Roots are the spans without a parent; a span whose parent is missing from `spans` is
    shown as an extra root marked `orphan`. Every span is yielded exactly once, even when
    parent ids form a cycle (a malformed file).
    """
    ids = {span.span_id for span in spans}
    children: dict[str, list[int]] = {}
    roots: list[int] = []
    for index, span in enumerate(spans):
        parent = span.parent_span_id
        if parent is None or parent not in ids or parent == span.span_id:
            roots.append(index)
        else:
            children.setdefault(parent, []).append(index)

    def order(indices: Iterable[int]) -> list[int]:
        return sorted(indices, key=lambda i: (spans[i].start_ns, spans[i].end_ns, i))

    seen: set[int] = set()
    pending = order(roots)
    while True:
        yield from _depth_first(spans, pending, children, seen, order)
        # Spans still unseen sit on a parent cycle; start again from the earliest of them.
        rest = [i for i in range(len(spans)) if i not in seen]
        if not rest:
            return
        pending = order(rest)[:1]


def _depth_first(
    spans: Sequence[SpanRecord],
    roots: list[int],
    children: Mapping[str, list[int]],
    seen: set[int],
    order: Callable[[Iterable[int]], list[int]],
) -> Iterator[TreeRow]:
    # An explicit stack: a deep (or malicious) trace must not hit the recursion limit.
    stack: list[tuple[int, int, bool, tuple[bool, ...]]] = [
        (index, 0, n == len(roots) - 1, ()) for n, index in reversed(list(enumerate(roots)))
    ]
    while stack:
        index, depth, last, ancestors = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        span = spans[index]
        orphan = depth == 0 and span.parent_span_id is not None
        yield TreeRow(span, depth, last, ancestors, orphan)
        kids = [i for i in order(children.get(span.span_id, ())) if i not in seen]
        below = (*ancestors, last)
        for n in range(len(kids) - 1, -1, -1):
            stack.append((kids[n], depth + 1, n == len(kids) - 1, below))

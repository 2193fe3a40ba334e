"""`agent-trace report`: what a trace file says about compliance, consensus and latency.

The file is streamed once (twice with `--html`, to collect the spans of the session drawn on
the timeline). Memory does not grow with the number of spans:

- counters for checks, violations, rounds, outcomes, targets and errors;
- per agent, turn latencies in a reservoir of `RESERVOIR_SIZE` samples: quantiles are exact
  while an agent has at most that many turns and estimated from a uniform random sample (fixed
  seed, so reports are repeatable) beyond; count, mean, min, max and the histogram stay exact;
- rounds wait for their session's root span, and votes for their round: the SDK exports a
  span after its children, so only sessions and rounds still open are held (at most
  `MAX_OPEN_SESSIONS` and `MAX_OPEN_ROUNDS`; more are counted as untracked). The ids of the
  last `RECENTLY_CLOSED` sessions are kept so that a round written after its session's root
  is counted as late instead of as a new session.

Quantiles use the nearest-rank definition: p95 is the smallest sample with at least 95% of
samples at or below it.

Rounds to agreement: per session, the number of the first round that reached consensus (or
"never"). A round without `agent_trace.consensus.round` takes its position among the
session's rounds by start time.

Dissent: in a round that reached consensus, each agent's last vote counts. A vote dissents
when its side (`agent_trace.vote.side`, for or against) is not the side of the round's
`agent_trace.consensus.decision` (approve or reject); for any other decision text, when its
value differs from the decision. Without a recorded decision, the decision is the vote value
with the largest total weight, and a tie decides nothing. Abstentions never dissent; rounds
without consensus count no dissent.

Exit codes: 0 report written; 1 the file holds no spans, or `--session` names no session;
2 usage error, missing or unreadable file, a malformed line with `--strict`, or the HTML file
cannot be written (nothing is left half-written).
"""

from __future__ import annotations

import argparse
import bisect
import html
import json
import math
import os
import random
import sys
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, TextIO, TypeGuard

from agent_trace.cli._common import printable
from agent_trace.cli.show import format_duration, problem_printer
from agent_trace.tracefile import (
    LineProblem,
    ReadStats,
    SpanRecord,
    TraceFileError,
    collect_trace,
    coordination_role,
    default_path,
    iter_spans,
    walk_tree,
)

__all__ = [
    "MAX_OPEN_ROUNDS",
    "MAX_OPEN_SESSIONS",
    "RECENTLY_CLOSED",
    "RESERVOIR_SIZE",
    "ReportBuilder",
    "add_parser",
    "render_html",
    "render_text",
    "run",
    "summarize",
]

EXIT_OK, EXIT_NO_DATA, EXIT_USAGE = 0, 1, 2
RESERVOIR_SIZE = 10_000
MAX_OPEN_SESSIONS = 100_000
MAX_OPEN_ROUNDS = 100_000
RECENTLY_CLOSED = 10_000
TIMELINE_MAX_SPANS = 2_000
QUANTILES = (50, 95, 99)

# The turn-duration histogram's bucket bounds (seconds), as the metrics use them.
BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BUCKETS_NS = tuple(round(b * 1e9) for b in BUCKETS_S)

_CONVERSATION_ID = "gen_ai.conversation.id"
_COMPLIANCE = "agent_trace.compliance."
_CONSENSUS = "agent_trace.consensus."
_TARGET = "agent_trace.target."
_ABSTAIN = "abstain"
_FLOAT_MAX = sys.float_info.max
_DECISION_SIDES = {"approve": "for", "reject": "against"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `report` on the `agent-trace` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="summarise a trace file: compliance, consensus, dissent, latency, targets",
        description=(
            "Summarise a trace file: compliance rate, violations by type and severity, "
            "consensus outcomes and rounds to agreement, dissent per agent, per-agent turn "
            "latency p50/p95/p99, breached targets and session outcomes. The file is "
            "streamed, so its size does not bound what can be reported."
        ),
        epilog=(
            "Exit codes: 0 ok, 1 no spans or no such session, 2 usage error, unreadable "
            "file or output not writable."
        ),
    )
    parser.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="trace file (default: $AGENT_TRACE_LOCAL_PATH or .agent-trace/traces.jsonl)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write a self-contained HTML page with a session timeline and charts",
    )
    parser.add_argument(
        "--session",
        metavar="ID",
        help="the session drawn on the HTML timeline (default: the slowest)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse a file with a malformed line (exit 2); by default such a line is skipped "
        "and named on stderr with its number",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `agent-trace report` with parsed arguments; returns the exit code."""
    out, err = sys.stdout, sys.stderr
    path: Path = args.file if args.file is not None else default_path()
    if args.session is not None and args.html is None:
        _error(err, "--session chooses the timeline of --html FILE; give --html too")
        return EXIT_USAGE

    try:
        builder = summarize(
            path,
            strict=args.strict,
            on_problem=problem_printer("report", err),
            timeline_session=args.session,
        )
    except TraceFileError as exc:
        _error(err, str(exc))
        return EXIT_USAGE
    stats = builder.stats
    if stats.skipped_lines:
        _error(err, f"{stats.skipped_lines} malformed line(s) skipped")
    if builder.span_count == 0:
        _error(err, f"no spans in {path}")
        return EXIT_NO_DATA
    summary = builder.summary(str(path))

    if args.html is not None:
        code = _write_html(path, args, builder, summary, err)
        if code != EXIT_OK:
            return code
    if args.json:
        out.write(json.dumps(summary, indent=2, sort_keys=False, allow_nan=False) + "\n")
    else:
        out.write("\n".join(render_text(summary)) + "\n")
    if args.html is not None:
        _error(err, f"wrote {args.html}")
    return EXIT_OK


def _error(err: TextIO, message: str) -> None:
    err.write(f"agent-trace report: {printable(message)}\n")


def summarize(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    on_problem: Callable[[LineProblem], None] | None = None,
    timeline_session: str | None = None,
) -> ReportBuilder:
    """Stream a trace file through a `ReportBuilder`.

    Args:
        path: the trace file.
        strict: raise `TraceFileError` at the first malformed line instead of skipping it.
        on_problem: called with each skipped line (see `agent_trace.tracefile.iter_spans`).
        timeline_session: remember the trace of this session id for the HTML timeline.

    Returns:
        The filled builder; `summary()` gives the figures.

    Raises:
        TraceFileError: the file is missing or unreadable, or malformed in strict mode.
    """
    builder = ReportBuilder(timeline_session=timeline_session)
    with iter_spans(path, strict=strict, on_problem=on_problem) as stream:
        builder.stats = stream.stats
        for span in stream:
            builder.add(span)
    return builder


class _Samples:
    """Durations of one kind of span: exact moments and histogram, a bounded reservoir."""

    __slots__ = ("buckets", "count", "max_ns", "min_ns", "rng", "samples", "total_ns")

    def __init__(self, seed: str) -> None:
        self.count = 0
        self.total_ns = 0
        self.min_ns = 0
        self.max_ns = 0
        self.samples: list[int] = []
        self.buckets = [0] * (len(_BUCKETS_NS) + 1)
        # Seeded per name: the same file always gives the same estimate. As bytes, because a
        # name read from a file may hold lone surrogates, which str seeds cannot encode; for any
        # other name the bytes are those a str seed would use, so the estimates do not change.
        self.rng = random.Random(seed.encode("utf-8", "surrogatepass"))

    def add(self, duration_ns: int) -> None:
        self.count += 1
        self.total_ns += duration_ns
        if self.count == 1 or duration_ns < self.min_ns:
            self.min_ns = duration_ns
        self.max_ns = max(self.max_ns, duration_ns)
        self.buckets[bisect.bisect_left(_BUCKETS_NS, duration_ns)] += 1
        if len(self.samples) < RESERVOIR_SIZE:
            self.samples.append(duration_ns)
            return
        # Reservoir sampling: every duration seen so far stays with equal probability.
        slot = self.rng.randrange(self.count)
        if slot < RESERVOIR_SIZE:
            self.samples[slot] = duration_ns

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.samples)
        figures: dict[str, Any] = {"count": self.count, "exact": self.count <= RESERVOIR_SIZE}
        for q in QUANTILES:
            figures[f"p{q}_ms"] = _ms(nearest_rank(ordered, q))
        figures |= {
            "min_ms": _ms(self.min_ns),
            "max_ms": _ms(self.max_ns),
            "mean_ms": _ms(self.total_ns / self.count),
            "histogram": {
                "le_ms": [round(b * 1000, 6) for b in BUCKETS_S] + [None],
                "counts": list(self.buckets),
            },
        }
        return figures


def nearest_rank(ordered: Sequence[int], percent: int) -> int:
    """The smallest value with at least `percent`% of `ordered` at or below it."""
    rank = -(-percent * len(ordered) // 100)  # ceil in integers: no float rounding at .95*n
    return ordered[max(rank, 1) - 1]


def _ms(ns: float) -> float:
    return round(ns / 1e6, 6)


class _Target:
    __slots__ = ("breached", "judged", "threshold", "unit", "worst")

    def __init__(self) -> None:
        self.judged = 0
        self.breached = 0
        self.threshold: Any = None
        self.unit: Any = None
        self.worst: float | None = None


class ReportBuilder:
    """Accumulates the report's figures one span at a time; memory stays bounded.

    Example:
        >>> builder = ReportBuilder()
        >>> for span in iter_spans("traces.jsonl"):
        ...     builder.add(span)
        >>> builder.summary("traces.jsonl")["compliance"]["rate"]
        0.925
    """

    def __init__(self, timeline_session: str | None = None) -> None:
        self.stats = ReadStats()
        self.span_count = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.services: Counter[str] = Counter()

        self.sessions = 0
        self.session_outcomes: Counter[str] = Counter()
        self.session_durations = _Samples("session")
        self.slowest: tuple[int, str, str | None] | None = None
        self.timeline_session = timeline_session
        self.timeline_trace: str | None = None

        self.check_results: Counter[str] = Counter()
        self.policy_results: Counter[tuple[str, str]] = Counter()
        self.violations: Counter[tuple[str, str]] = Counter()

        self.round_outcomes: Counter[tuple[str, str]] = Counter()
        self.open_sessions: dict[str, list[_Round]] = {}
        self.recently_closed: OrderedDict[str, None] = OrderedDict()
        self.agreement: Counter[int | None] = Counter()
        self.late_rounds = 0
        self.untracked_rounds = 0
        self.open_votes: dict[str, list[_Vote]] = {}
        self.votes_per_agent: Counter[str] = Counter()
        self.judged_votes: Counter[str] = Counter()
        self.dissent: Counter[str] = Counter()
        self.decided_rounds = 0
        self.undecided_rounds = 0
        self.unheld_votes = 0

        self.turns: dict[str, _Samples] = {}
        self.targets: dict[str, _Target] = {}
        self.errors: Counter[str] = Counter()

    def add(self, span: SpanRecord) -> None:
        """Count one span."""
        self.span_count += 1
        if self.first_ns is None or span.start_ns < self.first_ns:
            self.first_ns = span.start_ns
        if self.last_ns is None or span.end_ns > self.last_ns:
            self.last_ns = span.end_ns
        service = span.resource.get("service.name")
        if isinstance(service, str) and (service in self.services or len(self.services) < 100):
            self.services[service] += 1

        attrs = span.attributes
        role = coordination_role(span)
        if role == "session":
            self._session(span)
        elif role == "turn":
            self._turn(span)
        elif role == "round":
            self._round(span)
        elif role == "vote":
            self._vote(span)
        if role == "check" or _COMPLIANCE + "result" in attrs:
            self._check(attrs)
        if _TARGET + "name" in attrs:
            self._target(attrs)
        if span.is_error:
            kind = attrs.get("error.type")
            self.errors[str(kind) if kind is not None else "(unspecified)"] += 1

    def _session(self, span: SpanRecord) -> None:
        self.sessions += 1
        outcome = span.attributes.get("agent_trace.session.outcome")
        self.session_outcomes[str(outcome) if outcome is not None else "(none)"] += 1
        self.session_durations.add(span.duration_ns)
        session_id = span.attributes.get(_CONVERSATION_ID)
        session_id = str(session_id) if session_id is not None else None
        if session_id is not None:
            self._close_session(session_id)
        if self.slowest is None or span.duration_ns > self.slowest[0]:
            self.slowest = (span.duration_ns, span.trace_id, session_id)
        if session_id is not None and session_id == self.timeline_session:
            self.timeline_trace = span.trace_id

    def _turn(self, span: SpanRecord) -> None:
        agent = span.attributes.get("gen_ai.agent.name")
        if agent is None:
            agent = span.name.removeprefix("invoke_agent ")
        agent = str(agent)
        samples = self.turns.get(agent)
        if samples is None:
            samples = self.turns[agent] = _Samples(agent)
        samples.add(span.duration_ns)

    def _check(self, attrs: dict[str, Any]) -> None:
        result = str(attrs.get(_COMPLIANCE + "result", "(none)"))
        policy = str(attrs.get(_COMPLIANCE + "policy", "(none)"))
        self.check_results[result] += 1
        self.policy_results[(policy, result)] += 1
        if result == "violation":
            kind = attrs.get(_COMPLIANCE + "violation.type") or policy
            severity = attrs.get(_COMPLIANCE + "severity") or "(none)"
            self.violations[(str(kind), str(severity))] += 1

    def _close_session(self, session_id: str) -> None:
        rounds = self.open_sessions.pop(session_id, None)
        if rounds:
            self.agreement[_agreement_round(rounds)] += 1
        self.recently_closed[session_id] = None
        self.recently_closed.move_to_end(session_id)
        if len(self.recently_closed) > RECENTLY_CLOSED:
            self.recently_closed.popitem(last=False)

    def _round(self, span: SpanRecord) -> None:
        attrs = span.attributes
        algorithm = str(attrs.get(_CONSENSUS + "algorithm") or span.name.partition(" ")[2])
        outcome = str(attrs.get(_CONSENSUS + "outcome", "(none)"))
        self.round_outcomes[(algorithm, outcome)] += 1
        consensus = outcome == "consensus"

        session_id = attrs.get(_CONVERSATION_ID)
        if session_id is not None:
            key = str(session_id)
            number = attrs.get(_CONSENSUS + "round")
            number = number if isinstance(number, int) and number > 0 else None
            rounds = self.open_sessions.get(key)
            if key in self.recently_closed:
                self.late_rounds += 1
            elif rounds is None and len(self.open_sessions) >= MAX_OPEN_SESSIONS:
                self.untracked_rounds += 1
            else:
                if rounds is None:
                    rounds = self.open_sessions[key] = []
                rounds.append(_Round(span.start_ns, number, consensus))

        votes = self.open_votes.pop(span.span_id, [])
        if not consensus:
            return
        decision = attrs.get(_CONSENSUS + "decision")
        judged = _judge_votes(votes, str(decision).lower() if decision is not None else None)
        if judged is None:
            self.undecided_rounds += 1
            return
        self.decided_rounds += 1
        for agent, dissents in judged:
            self.judged_votes[agent] += 1
            if dissents:
                self.dissent[agent] += 1

    def _vote(self, span: SpanRecord) -> None:
        attrs = span.attributes
        agent = str(attrs.get("gen_ai.agent.name") or span.name.removeprefix("vote "))
        self.votes_per_agent[agent] += 1
        value = attrs.get("agent_trace.vote.value")
        if value is None or span.parent_span_id is None:
            return
        side = attrs.get("agent_trace.vote.side")
        weight = attrs.get("agent_trace.vote.weight")
        weight = float(weight) if _finite_number(weight) else 1.0
        waiting = self.open_votes.get(span.parent_span_id)
        if waiting is None:
            if len(self.open_votes) >= MAX_OPEN_ROUNDS:
                self.unheld_votes += 1
                return
            waiting = self.open_votes[span.parent_span_id] = []
        waiting.append(
            _Vote(
                agent,
                span.end_ns,
                str(value).lower(),
                str(side) if side is not None else None,
                weight,
            )
        )

    def _target(self, attrs: dict[str, Any]) -> None:
        name = str(attrs[_TARGET + "name"])
        target = self.targets.get(name)
        if target is None:
            target = self.targets[name] = _Target()
        target.judged += 1
        target.threshold = _plain(attrs.get(_TARGET + "threshold", target.threshold))
        target.unit = _plain(attrs.get(_TARGET + "unit", target.unit))
        if attrs.get(_TARGET + "met") is not False:
            return
        target.breached += 1
        actual = attrs.get(_TARGET + "actual")
        if _finite_number(actual):
            target.worst = actual if target.worst is None else max(target.worst, actual)

    def summary(self, path: str) -> dict[str, Any]:
        """The report as one JSON-ready object (the shape `--json` prints)."""
        compliant = self.check_results.get("compliant", 0)
        violating = self.check_results.get("violation", 0)
        # A check that gave no verdict (an error) counts against the rate, as in the
        # Prometheus rule and the built-in alert policy: it is never taken for compliant.
        judged = compliant + violating + self.check_results.get("error", 0)

        # Sessions whose root span is not in the file are judged on the rounds seen.
        reached = self.agreement.copy()
        for rounds in self.open_sessions.values():
            reached[_agreement_round(rounds)] += 1
        never = reached.pop(None, 0)
        to_agreement = {str(n): reached[n] for n in sorted(n for n in reached if n is not None)}
        to_agreement["never"] = never

        dissent = {
            agent: {
                "votes": self.votes_per_agent[agent],
                "votes_in_consensus_rounds": self.judged_votes[agent],
                "dissents": self.dissent[agent],
                "rate": _ratio(self.dissent[agent], self.judged_votes[agent]),
            }
            for agent in sorted(self.votes_per_agent)
        }
        most = max(self.dissent.values(), default=0)
        slowest = None
        if self.slowest is not None:
            slowest = {
                "session_id": self.slowest[2],
                "trace_id": self.slowest[1],
                "duration_ms": _ms(self.slowest[0]),
            }

        return {
            "file": path,
            "read": {
                "lines": self.stats.lines,
                "spans": self.span_count,
                "skipped_lines": self.stats.skipped_lines,
                "problems": [{"line": p.line, "reason": p.reason} for p in self.stats.problems],
            },
            "time_range": {
                "start": _iso(self.first_ns),
                "end": _iso(self.last_ns),
                "duration_ms": _ms((self.last_ns or 0) - (self.first_ns or 0)),
            },
            "services": dict(self.services.most_common()),
            "sessions": {
                "count": self.sessions,
                "outcomes": dict(self.session_outcomes.most_common()),
                "duration": self.session_durations.figures() if self.sessions else None,
                "slowest": slowest,
            },
            "compliance": {
                "checks": sum(self.check_results.values()),
                "compliant": compliant,
                "violation": violating,
                "error": self.check_results.get("error", 0),
                "rate": _ratio(compliant, judged),
                "by_policy": _nested(self.policy_results),
            },
            "violations": {
                "total": sum(self.violations.values()),
                "by_type_severity": [
                    {"type": kind, "severity": severity, "count": count}
                    for (kind, severity), count in sorted(
                        self.violations.items(), key=lambda item: (-item[1], item[0])
                    )
                ],
                "by_type": _sum_by(self.violations, 0),
                "by_severity": _sum_by(self.violations, 1),
            },
            "consensus": {
                "rounds": sum(self.round_outcomes.values()),
                "outcomes": [
                    {"algorithm": algorithm, "outcome": outcome, "count": count}
                    for (algorithm, outcome), count in sorted(self.round_outcomes.items())
                ],
                "sessions_with_rounds": sum(to_agreement.values()),
                "rounds_to_agreement": to_agreement,
                "late_rounds": self.late_rounds,
                "untracked_rounds": self.untracked_rounds,
            },
            "dissent": {
                "by_agent": dissent,
                "most": sorted(a for a, n in self.dissent.items() if n == most and most > 0),
                "decided_rounds": self.decided_rounds,
                "undecided_rounds": self.undecided_rounds,
                "votes_without_round": sum(len(v) for v in self.open_votes.values())
                + self.unheld_votes,
            },
            "turn_latency": {agent: self.turns[agent].figures() for agent in sorted(self.turns)},
            "targets": [
                {
                    "name": name,
                    "judged": target.judged,
                    "breached": target.breached,
                    "threshold": target.threshold,
                    "unit": target.unit,
                    "worst_actual": target.worst,
                }
                for name, target in sorted(self.targets.items())
            ],
            "errors": {"total": sum(self.errors.values()), "by_type": dict(self.errors)},
        }


class _Round(NamedTuple):
    start_ns: int
    number: int | None
    consensus: bool


class _Vote(NamedTuple):
    agent: str
    end_ns: int
    value: str
    side: str | None
    weight: float


def _agreement_round(rounds: list[_Round]) -> int | None:
    """The number of the session's first round that reached consensus; None for never."""
    reached = [
        round_.number or position
        for position, round_ in enumerate(sorted(rounds, key=lambda r: r.start_ns), start=1)
        if round_.consensus
    ]
    return min(reached, default=None)


def _judge_votes(votes: list[_Vote], decision: str | None) -> list[tuple[str, bool]] | None:
    """(agent, dissents) for each agent's last non-abstaining vote; None if nothing was decided."""
    last: dict[str, _Vote] = {}
    for vote in sorted(votes, key=lambda v: v.end_ns):
        last[vote.agent] = vote
    cast = [
        v
        for v in last.values()
        if v.side != _ABSTAIN and not (v.side is None and v.value == _ABSTAIN)
    ]
    decided_side = _DECISION_SIDES.get(decision) if decision is not None else None
    if decided_side is not None and all(v.side is not None for v in cast):
        return [(v.agent, v.side != decided_side) for v in cast]
    if decision is None:
        decision = _plurality(cast)
        if decision is None:
            return None
    return [(v.agent, v.value != decision) for v in cast]


def _plurality(votes: list[_Vote]) -> str | None:
    weights: dict[str, float] = {}
    for vote in votes:
        weights[vote.value] = weights.get(vote.value, 0.0) + vote.weight
    ranked = sorted(weights.items(), key=lambda item: -item[1])[:2]
    if not ranked or (len(ranked) == 2 and math.isclose(ranked[0][1], ranked[1][1])):
        return None
    return ranked[0][0]


def _finite_number(value: Any) -> TypeGuard[int | float]:
    """A number that float arithmetic and float formats can take."""
    if isinstance(value, float):
        return math.isfinite(value)
    # Compared exactly: an int beyond a float's range would make math.isfinite raise.
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -_FLOAT_MAX <= value <= _FLOAT_MAX
    )


def _plain(value: Any) -> Any:
    # The JSON report must print whatever a file holds: NaN, bytes and lists become text.
    if value is None or isinstance(value, (str, bool, int)) or _finite_number(value):
        return value
    return str(value)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def _nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (outer, inner), count in sorted(counts.items()):
        nested.setdefault(outer, {})[inner] = count
    return nested


def _sum_by(counts: Counter[tuple[str, str]], index: int) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for key, count in counts.items():
        totals[key[index]] += count
    return dict(totals.most_common())


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    try:
        moment = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        # Past year 9999 (or the platform's time_t): no calendar date, the raw figure.
        return f"{ns} ns after the epoch"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- text ---


def render_text(summary: dict[str, Any]) -> list[str]:
    """The report for a terminal, as lines; text from the file goes through `printable`."""
    return [printable(line) for line in _text_lines(summary)]


def _text_lines(summary: dict[str, Any]) -> list[str]:
    read = summary["read"]
    span_range = summary["time_range"]
    lines = [f"agent-trace report: {summary['file']}"]
    facts = f"  {read['spans']:,} spans, {summary['sessions']['count']:,} sessions"
    if span_range["start"]:
        facts += f", {span_range['start']} .. {span_range['end']}"
    if read["skipped_lines"]:
        facts += f"  ({read['skipped_lines']} malformed lines skipped)"
    lines.append(facts)

    sessions = summary["sessions"]
    lines += ["", "Sessions"]
    lines += _count_rows(sessions["outcomes"], sessions["count"])
    if sessions["slowest"]:
        slow = sessions["slowest"]
        lines.append(f"  slowest: {slow['session_id']} ({slow['duration_ms']:.2f} ms)")

    compliance = summary["compliance"]
    lines += ["", "Compliance"]
    if compliance["checks"]:
        rate = compliance["rate"]
        shown = f"{rate:.1%}" if rate is not None else "n/a"
        lines.append(
            f"  rate {shown}: {compliance['compliant']} compliant, "
            f"{compliance['violation']} violations, {compliance['error']} errors "
            f"in {compliance['checks']} checks"
        )
    else:
        lines.append("  no policy checks")
    violations = summary["violations"]
    if violations["total"]:
        lines.append("  violations by type and severity:")
        rows = violations["by_type_severity"]
        kind_w = max(len(row["type"]) for row in rows)
        severity_w = max(len(row["severity"]) for row in rows)
        for row in rows:
            lines.append(
                f"    {row['type']:<{kind_w}}  {row['severity']:<{severity_w}}  {row['count']:>6}"
            )

    consensus = summary["consensus"]
    lines += ["", "Consensus"]
    if consensus["rounds"]:
        for row in consensus["outcomes"]:
            lines.append(f"  {row['algorithm']:<24} {row['outcome']:<14} {row['count']:>6} rounds")
        agreement = "  ".join(
            f"{'never' if k == 'never' else 'round ' + k}: {n}"
            for k, n in consensus["rounds_to_agreement"].items()
        )
        lines.append(f"  rounds to agreement (sessions): {agreement}")
    else:
        lines.append("  no consensus rounds")

    dissent = summary["dissent"]
    if dissent["by_agent"]:
        lines += ["", "Dissent (votes against the decision of a consensus round)"]
        for agent, row in dissent["by_agent"].items():
            rate = f"{row['rate']:.1%}" if row["rate"] is not None else "n/a"
            mark = "  <- most" if agent in dissent["most"] else ""
            lines.append(
                f"  {agent:<16} {row['dissents']:>5} of {row['votes_in_consensus_rounds']:>5}"
                f" ({rate}){mark}"
            )

    latency = summary["turn_latency"]
    lines += ["", "Turn latency per agent (ms)"]
    if latency:
        lines.append(f"  {'agent':<16} {'turns':>7} {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9}")
        for agent, row in latency.items():
            note = "" if row["exact"] else "  (sampled)"
            lines.append(
                f"  {agent:<16} {row['count']:>7} {row['p50_ms']:>9.3f} {row['p95_ms']:>9.3f}"
                f" {row['p99_ms']:>9.3f} {row['max_ms']:>9.3f}{note}"
            )
    else:
        lines.append("  no agent turns")

    breached = [t for t in summary["targets"] if t["breached"]]
    lines += ["", "Targets"]
    if not summary["targets"]:
        lines.append("  no performance targets")
    for target in summary["targets"]:
        unit = f" {target['unit']}" if target["unit"] else ""
        worst = ""
        if target["worst_actual"] is not None:
            worst = f", worst {target['worst_actual']:g}{unit}"
        mark = "!! " if target in breached else "   "
        lines.append(
            f"  {mark}{target['name']:<20} breached {target['breached']} of {target['judged']}"
            f" (threshold {target['threshold']}{unit}{worst})"
        )

    errors = summary["errors"]
    if errors["total"]:
        lines += ["", f"Errors ({errors['total']} ERROR spans)"]
        lines += _count_rows(errors["by_type"], errors["total"])
    return lines


def _count_rows(counts: dict[str, int], total: int) -> list[str]:
    width = max((len(name) for name in counts), default=0)
    return [
        f"  {name:<{width}}  {count:>7}  {count / total:6.1%}"
        if total
        else f"  {name:<{width}}  {count:>7}"
        for name, count in counts.items()
    ]


# --- html ---


def _write_html(
    path: Path,
    args: argparse.Namespace,
    builder: ReportBuilder,
    summary: dict[str, Any],
    err: TextIO,
) -> int:
    if args.session is not None:
        trace_id = builder.timeline_trace
        if trace_id is None:
            _error(err, f"no session {args.session!r} in {path}; nothing written")
            return EXIT_NO_DATA
        chosen = args.session
    elif builder.slowest is not None:
        _, trace_id, chosen = builder.slowest
    else:
        trace_id, chosen = None, None

    spans: list[SpanRecord] = []
    if trace_id is not None:
        try:
            spans, _ = collect_trace(
                path, trace_id, strict=args.strict, max_spans=TIMELINE_MAX_SPANS, checked=True
            )
        except TraceFileError as exc:
            _error(err, f"{exc}; nothing written")
            return EXIT_USAGE

    page = render_html(summary, spans, chosen)
    try:
        write_atomically(args.html, page)
    except OSError as exc:
        _error(err, f"cannot write {args.html}: {exc.strerror or exc}; nothing written")
        return EXIT_USAGE
    return EXIT_OK


def write_atomically(target: Path, text: str) -> None:
    """Write `text` to `target` through a temporary file and a rename: whole or not at all."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; a report is as readable as any other file the user makes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1f2328;
background:#fff;max-width:1200px}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.muted{color:#59636e}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;min-width:130px}
.card b{display:block;font-size:22px}.bad{color:#cf222e}.good{color:#1a7f37}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;text-align:right;
border-bottom:1px solid #eaeef2}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:24px}.grid>div{flex:1 1 340px}
svg text{font:11px system-ui,sans-serif;fill:#1f2328}
.legend span{display:inline-block;margin-right:12px}.legend i{display:inline-block;width:10px;
height:10px;margin-right:4px;vertical-align:middle}
"""

_ROLE_COLORS = {
    "session": "#8250df",
    "turn": "#0969da",
    "round": "#bf8700",
    "vote": "#d4a72c",
    "check": "#1a7f37",
    "handoff": "#57606a",
    "conflict": "#bc4c00",
    "escalation": "#e16f24",
    "message": "#6e7781",
    None: "#8c959f",
}
_VIOLATION_COLOR = "#cf222e"


def render_html(
    summary: dict[str, Any], timeline: Sequence[SpanRecord], session_id: str | None
) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG, no scripts, no fonts."""
    esc = _esc
    compliance = summary["compliance"]
    rate = compliance["rate"]
    sessions = summary["sessions"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>agent-trace report: {esc(summary['file'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>agent-trace report</h1>",
        f'<div class="muted">{esc(summary["file"])} &middot; {summary["read"]["spans"]:,} spans'
        f" &middot; {esc(str(summary['time_range']['start']))} .. "
        f"{esc(str(summary['time_range']['end']))}</div>",
        '<div class="cards">',
        _card("sessions", f"{sessions['count']:,}"),
        _card(
            "compliance rate",
            f"{rate:.1%}" if rate is not None else "n/a",
            "good" if rate is not None and rate >= 0.95 else "bad",
        ),
        _card("violations", str(summary["violations"]["total"]), "bad"),
        _card("consensus rounds", str(summary["consensus"]["rounds"])),
        _card("ERROR spans", str(summary["errors"]["total"]), "bad"),
        _card("malformed lines", str(summary["read"]["skipped_lines"])),
        "</div>",
    ]

    parts.append("<h2>Timeline</h2>")
    if timeline:
        label = f"session {session_id}" if session_id else f"trace {timeline[0].trace_id}"
        parts.append(f'<div class="muted">{esc(label)}</div>')
        parts.append(_timeline_svg(timeline))
    else:
        parts.append('<p class="muted">No session to draw.</p>')

    parts.append('<h2>Outcomes</h2><div class="grid">')
    parts.append(_chart("Session outcomes", list(sessions["outcomes"].items())))
    rounds = [
        (f"{row['outcome']} ({row['algorithm']})", row["count"])
        for row in summary["consensus"]["outcomes"]
    ]
    parts.append(_chart("Consensus rounds", rounds))
    agreement = [
        ("never" if key == "never" else f"round {key}", count)
        for key, count in summary["consensus"]["rounds_to_agreement"].items()
    ]
    parts.append(_chart("Rounds to agreement (sessions)", agreement))
    parts.append("</div>")

    parts.append('<h2>Compliance</h2><div class="grid">')
    parts.append(
        _chart(
            "Checks by result",
            [(k, compliance[k]) for k in ("compliant", "violation", "error") if compliance[k]],
        )
    )
    violation_rows = [
        (f"{row['type']} / {row['severity']}", row["count"])
        for row in summary["violations"]["by_type_severity"]
    ]
    parts.append(_chart("Violations by type / severity", violation_rows, _VIOLATION_COLOR))
    parts.append("</div>")

    parts.append("<h2>Turn latency per agent</h2>")
    parts.append(_latency_table(summary["turn_latency"]))
    parts.append('<div class="grid">')
    for agent, row in summary["turn_latency"].items():
        parts.append(_histogram(agent, row["histogram"]))
    parts.append("</div>")

    parts.append("<h2>Dissent and targets</h2>")
    parts.append(_dissent_table(summary["dissent"]))
    parts.append(_targets_table(summary["targets"]))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _card(label: str, value: str, tone: str = "") -> str:
    cls = f' class="{tone}"' if tone else ""
    return f'<div class="card"><b{cls}>{_esc(value)}</b>{_esc(label)}</div>'


def _chart(title: str, rows: list[tuple[str, int]], color: str = "#0969da") -> str:
    """A horizontal bar chart in SVG."""
    esc = _esc
    if not rows:
        return f'<div><h3>{esc(title)}</h3><p class="muted">none</p></div>'
    label_w, bar_w, row_h = 200, 260, 20
    top = max(count for _, count in rows) or 1
    svg = [
        f'<svg role="img" aria-label="{esc(title)}" width="{label_w + bar_w + 60}" '
        f'height="{row_h * len(rows) + 4}">'
    ]
    for i, (label, count) in enumerate(rows):
        y = i * row_h + 2
        width = max(1, round(bar_w * count / top)) if count else 0
        svg.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{esc(_clip(label, 30))}'
            f"</text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{width}" height="{row_h - 6}" '
            f'fill="{color}"><title>{esc(label)}: {count}</title></rect>'
            f'<text x="{label_w + width + 6}" y="{y + 14}">{count}</text>'
        )
    svg.append("</svg>")
    return f"<div><h3>{esc(title)}</h3>{''.join(svg)}</div>"


def _histogram(agent: str, histogram: dict[str, Any]) -> str:
    """One agent's turn durations over the metric buckets, empty edges trimmed."""
    esc = _esc
    counts: list[int] = histogram["counts"]
    bounds: list[float | None] = histogram["le_ms"]
    used = [i for i, n in enumerate(counts) if n]
    if not used:
        return ""
    first, last = used[0], used[-1]
    col_w, height, base = 44, 120, 140
    top = max(counts) or 1
    svg = [
        f'<svg role="img" aria-label="turn latency of {esc(agent)}" '
        f'width="{max(col_w * (last - first + 1) + 10, 200)}" height="{base + 30}">'
    ]
    for slot, i in enumerate(range(first, last + 1)):
        bar_h = round(height * counts[i] / top)
        x = slot * col_w + 5
        bound = bounds[i]
        label = f"≤{bound:g}" if bound is not None else f">{bounds[i - 1]:g}"
        svg.append(
            f'<rect x="{x}" y="{base - bar_h}" width="{col_w - 6}" height="{bar_h}" '
            f'fill="#0969da"><title>{esc(label)} ms: {counts[i]}</title></rect>'
            f'<text x="{x + (col_w - 6) / 2}" y="{base + 14}" text-anchor="middle">'
            f"{esc(label)}</text>"
            f'<text x="{x + (col_w - 6) / 2}" y="{base - bar_h - 3}" text-anchor="middle">'
            f"{counts[i] if counts[i] else ''}</text>"
        )
    svg.append(f'<text x="5" y="{base + 28}" class="muted">ms (bucket upper bound)</text></svg>')
    return f"<div><h3>{esc(agent)}</h3>{''.join(svg)}</div>"


def _latency_table(latency: dict[str, dict[str, Any]]) -> str:
    if not latency:
        return '<p class="muted">No agent turns.</p>'
    rows = [
        "<table><tr><th>agent</th><th>turns</th><th>p50 ms</th><th>p95 ms</th>"
        "<th>p99 ms</th><th>max ms</th><th>quantiles</th></tr>"
    ]
    for agent, row in latency.items():
        rows.append(
            f"<tr><td>{_esc(agent)}</td><td>{row['count']}</td>"
            f"<td>{row['p50_ms']:.3f}</td><td>{row['p95_ms']:.3f}</td>"
            f"<td>{row['p99_ms']:.3f}</td><td>{row['max_ms']:.3f}</td>"
            f"<td>{'exact' if row['exact'] else 'sampled'}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _dissent_table(dissent: dict[str, Any]) -> str:
    if not dissent["by_agent"]:
        return '<p class="muted">No votes.</p>'
    rows = [
        "<table><tr><th>agent</th><th>votes</th><th>in consensus rounds</th>"
        "<th>against the decision</th><th>rate</th></tr>"
    ]
    for agent, row in dissent["by_agent"].items():
        rate = f"{row['rate']:.1%}" if row["rate"] is not None else "n/a"
        cls = ' class="bad"' if agent in dissent["most"] else ""
        rows.append(
            f"<tr><td{cls}>{_esc(agent)}</td><td>{row['votes']}</td>"
            f"<td>{row['votes_in_consensus_rounds']}</td><td>{row['dissents']}</td>"
            f"<td>{rate}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _targets_table(targets: list[dict[str, Any]]) -> str:
    if not targets:
        return '<p class="muted">No performance targets.</p>'
    rows = [
        "<table><tr><th>target</th><th>judged</th><th>breached</th><th>threshold</th>"
        "<th>worst breach</th></tr>"
    ]
    for target in targets:
        unit = f" {target['unit']}" if target["unit"] else ""
        worst = "" if target["worst_actual"] is None else f"{target['worst_actual']:g}{unit}"
        cls = ' class="bad"' if target["breached"] else ""
        rows.append(
            f"<tr><td>{_esc(target['name'])}</td><td>{target['judged']}</td>"
            f"<td{cls}>{target['breached']}</td>"
            f"<td>{_esc(str(target['threshold']))}{_esc(unit)}</td>"
            f"<td>{_esc(worst)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _timeline_svg(spans: Sequence[SpanRecord]) -> str:
    """A waterfall of one trace: a row per span in tree order, bars on a common time axis."""
    esc = _esc
    rows = list(walk_tree(spans))
    t0 = min(s.start_ns for s in spans)
    total = max(max(s.end_ns for s in spans) - t0, 1)
    name_w, duration_w, plot_w, row_h, axis_h = 290, 80, 720, 16, 22
    label_w = name_w + duration_w
    height = axis_h + row_h * len(rows) + 6
    svg = [
        f'<svg role="img" aria-label="session timeline" width="{label_w + plot_w + 10}" '
        f'height="{height}">'
    ]
    for tick in range(5):
        x = label_w + plot_w * tick / 4
        anchor = ("start", "middle", "middle", "middle", "end")[tick]
        svg.append(
            f'<line x1="{x:.1f}" y1="{axis_h - 4}" x2="{x:.1f}" y2="{height}" '
            f'stroke="#eaeef2"/><text x="{x:.1f}" y="12" text-anchor="{anchor}">'
            f"{esc(format_duration(total * tick // 4))}</text>"
        )
    for i, row in enumerate(rows):
        span = row.span
        y = axis_h + i * row_h
        role = coordination_role(span)
        violation = span.attributes.get(_COMPLIANCE + "result") == "violation"
        color = _VIOLATION_COLOR if violation or span.is_error else _ROLE_COLORS[role]
        x = label_w + plot_w * (span.start_ns - t0) / total
        width = max(plot_w * span.duration_ns / total, 1.5)
        mark = "!! " if violation or span.is_error else ""
        tip = f"{span.name}: {format_duration(span.duration_ns)}"
        if violation:
            tip += (
                f" - violation {span.attributes.get(_COMPLIANCE + 'violation.type')}"
                f"/{span.attributes.get(_COMPLIANCE + 'severity')}"
            )
        if span.is_error:
            tip += f" - ERROR {span.status_message}"
        svg.append(
            f'<text x="{4 + 12 * row.depth}" y="{y + 12}">{esc(mark + _clip(span.name, 40))}'
            f'</text><text x="{label_w - 8}" y="{y + 12}" text-anchor="end">'
            f"{esc(format_duration(span.duration_ns))}</text>"
            f'<rect x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="{row_h - 5}" '
            f'fill="{color}"><title>{esc(tip)}</title></rect>'
        )
    svg.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{color}"></i>{role}</span>'
        for role, color in _ROLE_COLORS.items()
        if role is not None
    )
    legend += f'<span><i style="background:{_VIOLATION_COLOR}"></i>violation / ERROR</span>'
    return f'{"".join(svg)}<div class="legend muted">{legend}</div>'


def _esc(text: str) -> str:
    # printable() first: lone surrogates cannot be written as UTF-8, controls are invisible.
    return html.escape(printable(text))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

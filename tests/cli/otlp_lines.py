"""A test-side writer of trace files: span tuples in, OTLP JSON lines out.

Written from the OTLP/JSON description in the API notes, independently of the reader under
test, so that a misreading on either side shows up as a failing test.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

AGENTS = ("ethics", "legal", "ops")
OUTCOMES = ("approved", "rejected", "blocked", "escalated", "failed")
SIDES = {"approve": "for", "reject": "against", "abstain": "abstain"}
VIOLATIONS = (("privacy", "high"), ("data_leak", "high"), ("fairness", "medium"), ("harm", "low"))


class Span(NamedTuple):
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    status: int = 0
    message: str = ""
    kind: int = 1


def any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def span_json(span: Span) -> dict[str, Any]:
    body: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": [{"key": k, "value": any_value(v)} for k, v in span.attrs.items()],
        "status": {"code": span.status, **({"message": span.message} if span.message else {})},
    }
    if span.parent_id:
        body["parentSpanId"] = span.parent_id
    return body


def request_line(spans: Iterable[Span], service: str = "coordinator") -> str:
    request = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [
                    {"scope": {"name": "agent_trace"}, "spans": [span_json(s) for s in spans]}
                ],
            }
        ]
    }
    return json.dumps(request, separators=(",", ":"))


def write_trace_file(
    path: Path, spans: Iterable[Span], *, batch: int = 7, insert: dict[int, str] | None = None
) -> list[int]:
    """Write `spans` as lines of `batch` spans each; `insert` puts raw text at given line numbers.

    Returns the line numbers of the inserted raw lines, in file order.
    """
    insert = dict(insert or {})
    inserted = []
    number = 0
    with path.open("w", encoding="utf-8") as out:

        def emit(text: str) -> None:
            nonlocal number
            while number + 1 in insert:
                number += 1
                out.write(insert.pop(number) + "\n")
                inserted.append(number)
            number += 1
            out.write(text + "\n")

        chunk: list[Span] = []
        for span in spans:
            chunk.append(span)
            if len(chunk) == batch:
                emit(request_line(chunk))
                chunk = []
        if chunk:
            emit(request_line(chunk))
        for line_no in sorted(insert):
            out.write(insert[line_no] + "\n")
            number += 1
            inserted.append(number)
    return inserted


class Ids:
    """Deterministic, unique ids from a seeded random source."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def trace(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def span(self) -> str:
        return f"{self.rng.getrandbits(64) | 1:016x}"


def governance_session(rng: random.Random, ids: Ids, number: int, t0: int) -> list[Span]:
    """One coordination session as the SDK would export it: every child before its parent.

    Turns (each with a policy check), then up to three weighted-vote rounds that stop at
    consensus; random latencies, violations, missed targets and failures.
    """
    trace = ids.trace()
    session = f"sess-{number:06d}"
    root = ids.span()
    common = {"gen_ai.conversation.id": session, "agent_trace.constitution.hash": "0" * 16}
    spans: list[Span] = []
    cursor = t0 + 1_000

    for agent in AGENTS:
        turn_id = ids.span()
        duration = rng.randint(200_000, 30_000_000)
        check_start = cursor + duration // 3
        check_end = check_start + rng.randint(10_000, duration // 3)
        check = {
            **common,
            "sentry.op": "agent_trace.compliance.check",
            "agent_trace.compliance.policy": "constitution",
        }
        if rng.random() < 0.2:
            kind, severity = rng.choice(VIOLATIONS)
            check |= {
                "agent_trace.compliance.result": "violation",
                "agent_trace.compliance.violation.type": kind,
                "agent_trace.compliance.severity": severity,
                "agent_trace.compliance.enforcement": "block",
            }
        else:
            check["agent_trace.compliance.result"] = "compliant"
        spans.append(
            Span(
                trace,
                ids.span(),
                turn_id,
                "policy_check constitution",
                check_start,
                check_end,
                check,
            )
        )
        turn_attrs = {
            **common,
            "sentry.op": "gen_ai.invoke_agent",
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
        }
        spans.append(
            Span(
                trace, turn_id, root, f"invoke_agent {agent}", cursor, cursor + duration, turn_attrs
            )
        )
        cursor += duration + 1_000

    for round_number in (1, 2, 3):
        round_id = ids.span()
        round_start = cursor
        votes: dict[str, str] = {}
        for agent in AGENTS:
            # Sometimes an agent changes its mind within the round: its last vote counts.
            for _ in range(2 if rng.random() < 0.15 else 1):
                value = rng.choice(("approve", "approve", "reject", "abstain"))
                votes[agent] = value
                cursor += rng.randint(1_000, 50_000)
                vote_attrs = {
                    **common,
                    "sentry.op": "agent_trace.vote",
                    "gen_ai.agent.name": agent,
                    "agent_trace.vote.value": value,
                    "agent_trace.vote.side": SIDES[value],
                    "agent_trace.vote.weight": 1.0,
                    "agent_trace.vote.confidence": round(rng.random(), 2),
                }
                spans.append(
                    Span(trace, ids.span(), round_id, f"vote {agent}", cursor, cursor, vote_attrs)
                )
        counted = [v for v in votes.values() if v != "abstain"]
        top = max(counted.count("approve"), counted.count("reject"))
        agreement = top / len(counted) if counted else 0.0
        outcome = "consensus" if agreement >= 0.66 else "no_consensus"
        decision = None
        if outcome == "consensus":
            decision = max(("approve", "reject"), key=counted.count)
        actual = round(rng.uniform(0.5, 8.0), 3)
        round_attrs = {
            **common,
            "sentry.op": "agent_trace.consensus.round",
            "agent_trace.consensus.algorithm": "weighted_vote",
            "agent_trace.consensus.round": round_number,
            "agent_trace.consensus.outcome": outcome,
            **({"agent_trace.consensus.decision": decision} if decision else {}),
            "agent_trace.consensus.agreement": agreement,
            "agent_trace.consensus.votes.for": counted.count("approve"),
            "agent_trace.consensus.votes.against": counted.count("reject"),
            "agent_trace.consensus.votes.abstain": 3 - len(counted),
            "agent_trace.target.name": "round_compute",
            "agent_trace.target.threshold": 5.0,
            "agent_trace.target.actual": actual,
            "agent_trace.target.unit": "ms",
            "agent_trace.target.met": actual <= 5.0,
        }
        if round_number == 1 and rng.random() < 0.5:
            # The first round often carries no number; the report infers it from the order.
            del round_attrs["agent_trace.consensus.round"]
        cursor += 5_000
        spans.append(
            Span(
                trace,
                round_id,
                root,
                "consensus_round weighted_vote",
                round_start,
                cursor,
                round_attrs,
            )
        )
        cursor += 1_000
        if outcome == "consensus":
            break

    outcome = rng.choice(OUTCOMES)
    status, message = (2, "agent legal timed out") if outcome == "failed" else (0, "")
    root_attrs = {
        **common,
        "sentry.op": "agent_trace.session",
        "agent_trace.session.task_type": "ethical_review",
        "agent_trace.session.outcome": outcome,
    }
    if status == 2:
        root_attrs["error.type"] = "agent_timeout"
    spans.append(
        Span(
            trace,
            root,
            None,
            "invoke_workflow ethical_review",
            t0,
            cursor + 1_000,
            root_attrs,
            status,
            message,
        )
    )
    return spans


def governance_spans(
    seed: int, sessions: int, *, concurrency: int = 4, t0: int = 1_764_000_000_000_000_000
) -> Iterator[Span]:
    """Sessions run `concurrency` at a time; each group's spans come out in end-time order."""
    rng = random.Random(seed)
    ids = Ids(rng)
    for first in range(0, sessions, concurrency):
        group: list[Span] = []
        for number in range(first, min(first + concurrency, sessions)):
            group += governance_session(rng, ids, number, t0 + number * 40_000_000)
        group.sort(key=lambda s: s.end_ns)
        yield from group

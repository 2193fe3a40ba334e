"""`agent-trace report`: figures checked against figures computed here from the span tuples."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from otlp_lines import SIDES, Span, governance_spans, write_trace_file

from agent_trace.cli import report
from agent_trace.tracefile import SpanRecord

SEED, SESSIONS = 11, 80
T0 = 1_764_000_000_000_000_000


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="agent-trace")
    report.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["report", *argv])


def run_report(*argv: str) -> int:
    return report.run(parse(*argv))


@pytest.fixture(scope="module")
def spans() -> list[Span]:
    return list(governance_spans(SEED, SESSIONS))


@pytest.fixture(scope="module")
def trace_file(spans: list[Span], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "traces.jsonl"
    write_trace_file(path, spans, batch=64)
    return path


@pytest.fixture(scope="module")
def summary(trace_file: Path) -> dict[str, Any]:
    return report.summarize(trace_file).summary(str(trace_file))


# --- the expected figures, computed from the tuples without the code under test ---


def attr(span: Span, key: str) -> Any:
    return span.attrs.get(key)


def of_kind(spans: list[Span], prefix: str) -> list[Span]:
    return [s for s in spans if s.name.startswith(prefix)]


def nearest_rank(values: list[int], percent: int) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(percent * len(ordered) / 100) - 1]


def expected_rounds_to_agreement(spans: list[Span]) -> dict[str, int]:
    by_session: dict[str, list[Span]] = defaultdict(list)
    for span in of_kind(spans, "consensus_round "):
        by_session[attr(span, "gen_ai.conversation.id")].append(span)
    firsts: Counter[str] = Counter()
    for rounds in by_session.values():
        rounds.sort(key=lambda s: s.start_ns)
        numbers = [
            attr(r, "agent_trace.consensus.round") or position
            for position, r in enumerate(rounds, start=1)
            if attr(r, "agent_trace.consensus.outcome") == "consensus"
        ]
        firsts[str(min(numbers)) if numbers else "never"] += 1
    return dict(firsts)


def expected_dissent(spans: list[Span]) -> tuple[Counter[str], Counter[str]]:
    votes: dict[str, list[Span]] = defaultdict(list)
    for vote in of_kind(spans, "vote "):
        votes[vote.parent_id].append(vote)  # type: ignore[index]
    judged: Counter[str] = Counter()
    dissent: Counter[str] = Counter()
    for rnd in of_kind(spans, "consensus_round "):
        if attr(rnd, "agent_trace.consensus.outcome") != "consensus":
            continue
        wanted = SIDES[attr(rnd, "agent_trace.consensus.decision")]
        last = {attr(v, "gen_ai.agent.name"): v for v in sorted(votes[rnd.span_id], key=end)}
        for agent, vote in last.items():
            side = attr(vote, "agent_trace.vote.side")
            if side == "abstain":
                continue
            judged[agent] += 1
            dissent[agent] += side != wanted
    return judged, dissent


def end(span: Span) -> int:
    return span.end_ns


# --- the figures ---


def test_compliance_rate_is_compliant_over_every_check_with_a_result(
    spans: list[Span], summary: dict[str, Any]
) -> None:
    results = Counter(attr(s, "agent_trace.compliance.result") for s in of_kind(spans, "policy_"))

    compliance = summary["compliance"]
    assert compliance["compliant"] == results["compliant"]
    assert compliance["violation"] == results["violation"] > 0
    assert compliance["error"] == results["error"]
    # Errors (no verdict) count against the rate, as in the alert rules.
    assert compliance["rate"] == pytest.approx(
        results["compliant"] / (results["compliant"] + results["violation"] + results["error"])
    )


def test_a_check_without_a_verdict_counts_against_the_rate(tmp_path: Path) -> None:
    trace = "ab" * 16
    checks = [
        Span(trace, f"{i + 1:016x}", None, "policy_check privacy", 10 * i, 10 * i + 5, attrs)
        for i, attrs in enumerate(
            [
                {"sentry.op": "agent_trace.compliance.check", "agent_trace.compliance.result": r}
                for r in ("compliant", "compliant", "violation", "error")
            ]
        )
    ]
    path = tmp_path / "traces.jsonl"
    write_trace_file(path, checks)

    compliance = report.summarize(path).summary(str(path))["compliance"]

    assert (compliance["compliant"], compliance["violation"], compliance["error"]) == (2, 1, 1)
    assert compliance["rate"] == pytest.approx(2 / 4)


def test_violations_are_counted_by_type_and_severity(
    spans: list[Span], summary: dict[str, Any]
) -> None:
    expected = Counter(
        (
            attr(s, "agent_trace.compliance.violation.type"),
            attr(s, "agent_trace.compliance.severity"),
        )
        for s in spans
        if attr(s, "agent_trace.compliance.result") == "violation"
    )

    rows = summary["violations"]["by_type_severity"]
    assert {(r["type"], r["severity"]): r["count"] for r in rows} == dict(expected)
    assert summary["violations"]["total"] == sum(expected.values())
    assert [r["count"] for r in rows] == sorted((r["count"] for r in rows), reverse=True)


def test_consensus_outcomes_and_rounds_to_agreement_per_session(
    spans: list[Span], summary: dict[str, Any]
) -> None:
    outcomes = Counter(
        attr(s, "agent_trace.consensus.outcome") for s in of_kind(spans, "consensus_")
    )
    to_agreement = expected_rounds_to_agreement(spans)

    consensus = summary["consensus"]
    assert {r["outcome"]: r["count"] for r in consensus["outcomes"]} == dict(outcomes)
    assert {k: v for k, v in consensus["rounds_to_agreement"].items() if v} == to_agreement
    assert len(to_agreement) >= 3, "the generated file should reach agreement at several rounds"
    assert consensus["sessions_with_rounds"] == SESSIONS
    assert consensus["late_rounds"] == consensus["untracked_rounds"] == 0


def test_dissent_counts_each_agents_last_vote_against_the_decision(
    spans: list[Span], summary: dict[str, Any]
) -> None:
    judged, dissent = expected_dissent(spans)
    top = max(dissent.values())

    by_agent = summary["dissent"]["by_agent"]
    assert {a: r["dissents"] for a, r in by_agent.items()} == dict(dissent)
    assert {a: r["votes_in_consensus_rounds"] for a, r in by_agent.items()} == dict(judged)
    assert {a: r["votes"] for a, r in by_agent.items()} == dict(
        Counter(attr(v, "gen_ai.agent.name") for v in of_kind(spans, "vote "))
    )
    assert summary["dissent"]["most"] == sorted(a for a, n in dissent.items() if n == top)


def test_turn_latency_quantiles_per_agent_use_the_nearest_rank(
    spans: list[Span], summary: dict[str, Any]
) -> None:
    durations: dict[str, list[int]] = defaultdict(list)
    for turn in of_kind(spans, "invoke_agent "):
        durations[attr(turn, "gen_ai.agent.name")].append(turn.end_ns - turn.start_ns)

    latency = summary["turn_latency"]
    assert set(latency) == set(durations)
    for agent, values in durations.items():
        row = latency[agent]
        assert row["count"] == len(values) and row["exact"] is True
        for q in (50, 95, 99):
            assert row[f"p{q}_ms"] == pytest.approx(nearest_rank(values, q) / 1e6), (agent, q)
        assert row["max_ms"] == pytest.approx(max(values) / 1e6)
        assert sum(row["histogram"]["counts"]) == len(values)


def test_breached_targets_are_counted_per_target(
    spans: list[Span], summary: dict[str, Any]
) -> None:
    judged = [s for s in spans if attr(s, "agent_trace.target.name") is not None]
    breached = [s for s in judged if attr(s, "agent_trace.target.met") is False]

    (target,) = summary["targets"]
    assert target["name"] == "round_compute"
    assert (target["judged"], target["breached"]) == (len(judged), len(breached))
    assert target["worst_actual"] == max(attr(s, "agent_trace.target.actual") for s in breached)


def test_session_outcomes_errors_and_the_slowest_session(
    spans: list[Span], summary: dict[str, Any]
) -> None:
    roots = of_kind(spans, "invoke_workflow ")
    slowest = max(roots, key=lambda s: s.end_ns - s.start_ns)

    sessions = summary["sessions"]
    assert sessions["count"] == SESSIONS
    assert sessions["outcomes"] == dict(
        Counter(attr(s, "agent_trace.session.outcome") for s in roots)
    )
    assert sessions["slowest"]["session_id"] == attr(slowest, "gen_ai.conversation.id")
    assert summary["errors"]["by_type"] == dict(
        Counter(attr(s, "error.type") for s in spans if s.status == 2)
    )
    assert summary["read"] == {"lines": summary["read"]["lines"], "spans": len(spans)} | {
        "skipped_lines": 0,
        "problems": [],
    }


def test_json_flag_prints_the_summary_object(
    trace_file: Path, summary: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_report("--file", str(trace_file), "--json") == 0

    assert json.loads(capsys.readouterr().out) == summary


def test_text_report_shows_the_figures(
    trace_file: Path, summary: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_report("--file", str(trace_file)) == 0

    out = capsys.readouterr().out
    assert f"rate {summary['compliance']['rate']:.1%}" in out
    for agent, row in summary["turn_latency"].items():
        assert re.search(rf"{agent}\s+{row['count']}\s+{row['p50_ms']:.3f}\s", out)
    target = summary["targets"][0]
    assert re.search(
        rf"!! round_compute\s+breached {target['breached']} of {target['judged']}", out
    )
    assert f"{summary['dissent']['most'][0]}" in out and "<- most" in out


# --- the rules on small hand-made files ---


def round_with_votes(
    votes: list[tuple[str, str, str | None]],
    decision: str | None,
    session: str = "s1",
    start: int = 0,
    number: int | None = None,
    outcome: str = "consensus",
    trace: str = "a" * 32,
) -> list[Span]:
    round_id = f"{random.Random(start).getrandbits(64) | 1:016x}"
    common = {"gen_ai.conversation.id": session}
    spans = []
    for i, (agent, value, side) in enumerate(votes):
        attrs = {**common, "gen_ai.agent.name": agent, "agent_trace.vote.value": value}
        if side is not None:
            attrs["agent_trace.vote.side"] = side
        at = T0 + start + i + 1
        spans.append(
            Span(trace, f"{start * 100 + i + 1:016x}", round_id, f"vote {agent}", at, at, attrs)
        )
    attrs = {**common, "agent_trace.consensus.outcome": outcome}
    if decision is not None:
        attrs["agent_trace.consensus.decision"] = decision
    if number is not None:
        attrs["agent_trace.consensus.round"] = number
    spans.append(
        Span(
            trace,
            round_id,
            None,
            "consensus_round weighted_vote",
            T0 + start,
            T0 + start + 99,
            attrs,
        )
    )
    return spans


def summarize_spans(tmp_path: Path, spans: list[Span]) -> dict[str, Any]:
    path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.jsonl"
    write_trace_file(path, spans, batch=3)
    return report.summarize(path).summary(str(path))


def test_an_agent_that_changes_its_vote_is_judged_on_the_last_one(tmp_path: Path) -> None:
    spans = round_with_votes(
        [
            ("ethics", "reject", "against"),
            ("legal", "reject", "against"),
            ("ethics", "approve", "for"),
            ("ops", "abstain", "abstain"),
        ],
        decision="approve",
    )

    dissent = summarize_spans(tmp_path, spans)["dissent"]

    rows = dissent["by_agent"]
    assert (rows["ethics"]["dissents"], rows["ethics"]["votes"]) == (0, 2)
    assert rows["legal"]["dissents"] == 1
    assert rows["ops"]["votes_in_consensus_rounds"] == 0
    assert dissent["most"] == ["legal"]


def test_without_a_recorded_decision_the_weighted_plurality_decides(tmp_path: Path) -> None:
    decided = round_with_votes(
        [("a", "yes", None), ("b", "yes", None), ("c", "no", None)], decision=None
    )
    tied = round_with_votes([("a", "yes", None), ("c", "no", None)], decision=None, start=1000)

    dissent = summarize_spans(tmp_path, decided + tied)["dissent"]

    assert {a: r["dissents"] for a, r in dissent["by_agent"].items()} == {"a": 0, "b": 0, "c": 1}
    assert (dissent["decided_rounds"], dissent["undecided_rounds"]) == (1, 1)


def test_rounds_without_consensus_count_no_dissent(tmp_path: Path) -> None:
    spans = round_with_votes(
        [("a", "approve", "for"), ("b", "reject", "against")], decision=None, outcome="no_consensus"
    )

    dissent = summarize_spans(tmp_path, spans)["dissent"]

    assert dissent["most"] == [] and dissent["decided_rounds"] == 0


def test_a_round_without_a_number_takes_its_position_in_the_session(tmp_path: Path) -> None:
    spans = (
        round_with_votes([], None, "s1", start=0, outcome="no_consensus")
        + round_with_votes([], "approve", "s1", start=1000)
        + round_with_votes([], "approve", "s2", start=2000, number=3)
        + round_with_votes([], None, "s3", start=3000, outcome="no_consensus")
    )

    consensus = summarize_spans(tmp_path, spans)["consensus"]

    assert consensus["rounds_to_agreement"] == {"2": 1, "3": 1, "never": 1}


def test_a_round_written_after_its_session_root_is_late_not_a_new_session(
    tmp_path: Path,
) -> None:
    root = Span(
        "a" * 32,
        "f" * 16,
        None,
        "invoke_workflow review",
        T0,
        T0 + 10_000,
        {"gen_ai.conversation.id": "s1", "agent_trace.session.outcome": "approved"},
    )
    spans = [
        *round_with_votes([], "approve", "s1", start=0),
        root,
        *round_with_votes([], "approve", "s1", start=5000),
    ]

    consensus = summarize_spans(tmp_path, spans)["consensus"]

    assert consensus["rounds_to_agreement"] == {"1": 1, "never": 0}
    assert consensus["late_rounds"] == 1


def test_quantiles_beyond_the_reservoir_are_estimated_and_marked_sampled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESERVOIR_SIZE", 500)
    rng = random.Random(5)
    durations = [rng.randint(1, 10_000) * 1_000 for _ in range(6_000)]
    spans = [
        Span("b" * 32, f"{n + 1:016x}", None, "invoke_agent solo", T0, T0 + d, {})
        for n, d in enumerate(durations)
    ]

    row = summarize_spans(tmp_path, spans)["turn_latency"]["solo"]

    assert row["exact"] is False
    assert row["count"] == len(durations)
    assert row["max_ms"] == max(durations) / 1e6 and row["min_ms"] == min(durations) / 1e6
    assert row["mean_ms"] == pytest.approx(sum(durations) / len(durations) / 1e6)
    for q in (50, 95):
        assert row[f"p{q}_ms"] == pytest.approx(nearest_rank(durations, q) / 1e6, rel=0.1)


# --- html ---

EXTERNAL = re.compile(r"<script|<link|<img|src=|href=|url\(|@import|https?://", re.IGNORECASE)


def test_html_is_one_self_contained_page_with_the_slowest_session_timeline(
    trace_file: Path, spans: list[Span], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page_path = tmp_path / "report.html"

    code = run_report("--file", str(trace_file), "--html", str(page_path))

    page = page_path.read_text(encoding="utf-8")
    roots = of_kind(spans, "invoke_workflow ")
    slowest = max(roots, key=lambda s: s.end_ns - s.start_ns)
    session_spans = [s for s in spans if s.trace_id == slowest.trace_id]
    timeline = page.split("<h2>Timeline</h2>")[1].split("<h2>")[0]
    assert code == 0
    assert "wrote" in capsys.readouterr().err
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert EXTERNAL.search(page) is None
    assert f"session {attr(slowest, 'gen_ai.conversation.id')}" in timeline
    assert timeline.count("<rect") == len(session_spans)
    assert page.count("<svg") >= 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_html_timeline_of_a_chosen_session(
    trace_file: Path, spans: list[Span], tmp_path: Path
) -> None:
    page_path = tmp_path / "report.html"

    code = run_report(
        "--file", str(trace_file), "--html", str(page_path), "--session", "sess-000003"
    )

    timeline = page_path.read_text().split("<h2>Timeline</h2>")[1].split("<h2>")[0]
    wanted = [s for s in spans if attr(s, "gen_ai.conversation.id") == "sess-000003"]
    assert code == 0
    assert "session sess-000003" in timeline
    assert timeline.count("<rect") == len(wanted)


def test_an_unknown_html_session_exits_1_and_writes_nothing(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page_path = tmp_path / "report.html"

    code = run_report("--file", str(trace_file), "--html", str(page_path), "--session", "nobody")

    assert code == 1
    assert "no session 'nobody'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_html_into_a_missing_directory_exits_2(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_report("--file", str(trace_file), "--html", str(tmp_path / "no" / "r.html"))

    assert code == 2
    assert "cannot write" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_html_write_leaves_the_old_page_whole_and_no_temp_file(
    trace_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page_path = tmp_path / "report.html"
    page_path.write_text("previous report")

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    code = run_report("--file", str(trace_file), "--html", str(page_path))

    assert code == 2
    assert page_path.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_session_without_html_is_a_usage_error(
    trace_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_report("--file", str(trace_file), "--session", "sess-000001") == 2
    assert "--html" in capsys.readouterr().err


# --- files that are missing, empty or malformed ---


def test_a_missing_file_exits_2_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_report("--file", str(tmp_path / "nope.jsonl")) == 2

    err = capsys.readouterr().err
    assert "nope.jsonl: no such file" in err and "Traceback" not in err


def test_an_empty_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")

    assert run_report("--file", str(path), "--json") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "no spans" in captured.err


def test_a_malformed_line_is_skipped_reported_and_leaves_the_figures_alone(
    spans: list[Span], summary: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(path, spans, batch=64, insert={5: '{"resourceSpans": [{"scopeSpans": 7}]}'})

    code = run_report("--file", str(path), "--json")

    captured = capsys.readouterr()
    got = json.loads(captured.out)
    assert code == 0
    assert "line 5 skipped: resourceSpans[0].scopeSpans: expected a list" in captured.err
    assert got["read"]["skipped_lines"] == 1
    assert got["read"]["problems"][0]["line"] == 5
    for section in ("compliance", "violations", "consensus", "dissent", "turn_latency"):
        assert got[section] == summary[section]


def test_strict_mode_refuses_a_malformed_line_and_writes_no_html(
    spans: list[Span], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    write_trace_file(path, spans[:100], batch=10, insert={4: "{oops"})

    code = run_report("--file", str(path), "--strict", "--html", str(tmp_path / "r.html"))

    captured = capsys.readouterr()
    assert code == 2
    assert f"{path}:4: not valid JSON" in captured.err
    assert captured.out == ""
    assert not (tmp_path / "r.html").exists()


def _record(
    n: int, parent: int | None, name: str, start: int, end: int, attrs: dict[str, Any]
) -> SpanRecord:
    """A span as a caller of ReportBuilder may hold it, beyond what the file reader accepts."""
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    return SpanRecord(
        trace,
        f"{n:016x}",
        f"{parent:016x}" if parent else None,
        name,
        1,
        start,
        end,
        attrs,
        (),
        0,
        "",
        {},
        1,
    )


def test_times_past_the_calendar_and_numbers_past_a_float_are_reported_as_text() -> None:
    huge = 10**400
    start = 10**30  # no calendar date: datetime cannot hold it
    builder = report.ReportBuilder()
    # Children first, as the SDK exports them.
    for span in [
        _record(
            3,
            2,
            "vote legal",
            start,
            start + 1,
            {"agent_trace.vote.value": "approve", "agent_trace.vote.weight": huge},
        ),
        _record(
            4,
            2,
            "vote ethics",
            start,
            start + 1,
            {"agent_trace.vote.value": "reject", "agent_trace.vote.weight": 2},
        ),
        _record(
            2,
            1,
            "consensus_round vote",
            start,
            start + 5,
            {"agent_trace.consensus.outcome": "consensus", "gen_ai.conversation.id": "s1"},
        ),
        _record(
            5,
            1,
            "invoke_agent ethics",
            start,
            start + 2,
            {
                "agent_trace.target.name": "latency",
                "agent_trace.target.met": False,
                "agent_trace.target.actual": huge,
                "agent_trace.target.threshold": 5,
            },
        ),
        _record(
            6,
            1,
            "invoke_agent ethics",
            start,
            start + 2,
            {
                "agent_trace.target.name": "latency",
                "agent_trace.target.met": False,
                "agent_trace.target.actual": 7.5,
                "agent_trace.target.threshold": 5,
            },
        ),
    ]:
        builder.add(span)

    summary = builder.summary("t.jsonl")
    text = "\n".join(report.render_text(summary))
    page = report.render_html(summary, [], None)

    assert summary["time_range"]["start"] == f"{start} ns after the epoch"
    # The huge weight counts as no weight (1), so ethics' weight 2 decides against legal.
    assert summary["dissent"]["by_agent"]["legal"]["dissents"] == 1
    assert summary["targets"][0]["worst_actual"] == 7.5
    assert "worst 7.5" in text
    assert f"{start} ns after the epoch" in page
    json.dumps(summary, allow_nan=False)


def test_names_with_lone_surrogates_and_control_characters_are_reported_escaped() -> None:
    builder = report.ReportBuilder()
    for n in range(3):
        builder.add(
            _record(
                n + 1,
                None,
                "invoke_agent x",
                T0,
                T0 + 10 + n,
                {"gen_ai.agent.name": "ethics\ud800\x1b[2J"},
            )
        )

    summary = builder.summary("t\x1b.jsonl")
    text = "\n".join(report.render_text(summary))
    page = report.render_html(summary, [], None)

    assert summary["turn_latency"]["ethics\ud800\x1b[2J"]["count"] == 3
    assert "ethics\\ud800\\x1b[2J" in text
    assert "t\\x1b.jsonl" in text
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]", text + page)


# --- bounded memory ---

_MEASURE = textwrap.dedent(
    """
    import json, sys, time
    from agent_trace.cli import report

    def high_water():
        # VmHWM belongs to this process image; ru_maxrss would carry the parent's over exec.
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    before = high_water()
    started = time.perf_counter()
    summary = report.summarize(sys.argv[1]).summary(sys.argv[1])
    elapsed = time.perf_counter() - started
    peak = high_water()
    print(json.dumps({"before": before, "peak": peak, "elapsed_s": elapsed,
                      "spans": summary["read"]["spans"],
                      "checks": summary["compliance"]["checks"]}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_200000_span_file_is_reported_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    spans = itertools.islice(governance_spans(3, 40_000), 200_000)
    checks = 0

    def counting() -> Any:
        nonlocal checks
        for span in spans:
            checks += span.name.startswith("policy_check ")
            yield span

    write_trace_file(path, counting(), batch=512)
    size = path.stat().st_size

    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )

    measured = json.loads(done.stdout)
    growth = measured["peak"] - measured["before"]
    print(
        f"\n200,000 spans, {size / 1e6:.0f} MB file: {measured['elapsed_s']:.1f} s, "
        f"peak RSS {measured['peak'] / 1e6:.0f} MB (+{growth / 1e6:.0f} MB while reporting)"
    )
    assert (measured["spans"], measured["checks"]) == (200_000, checks)
    # Holding the file's text alone would take `size` bytes; the report needs a sliver of it.
    assert size > 100_000_000
    assert growth < size / 8
    assert measured["peak"] < size / 2

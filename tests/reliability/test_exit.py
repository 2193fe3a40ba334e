"""A process that exits without calling shutdown() still delivers everything, quietly.

The coordinator runs in a child process with every sink configured from the environment: the
local file, an OTLP/HTTP recorder and Sentry (the real Spotlight sidecar). It never calls
`agent_trace.shutdown()` and leaves one session open.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends.otlp_recorder import OtlpHttpRecorder, attributes_of
from tests.backends.spotlight import Spotlight
from tests.reliability._support import HERE, assert_quiet_exit, file_spans, run_child

pytestmark = pytest.mark.integration

FINISHED = 20
SPANS_PER_SESSION = 5  # session, turn, round, two votes


def env_for(recorder: OtlpHttpRecorder, spotlight: Spotlight, path: Path) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": recorder.traces_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "SENTRY_DSN": spotlight.dsn,
        "AGENT_TRACE_LOCAL_PATH": str(path),
    }


def test_exit_without_shutdown_delivers_every_span_to_every_sink(
    otlp_http_recorder: OtlpHttpRecorder, spotlight: Spotlight, tmp_path: Path
) -> None:
    path = tmp_path / "traces.jsonl"
    result = run_child(
        HERE / "child_exit.py",
        str(FINISHED),
        env=env_for(otlp_http_recorder, spotlight, path),
    )

    assert_quiet_exit(result)

    in_file = file_spans(path)
    expected = FINISHED * SPANS_PER_SESSION + 2  # plus the open session and its turn
    assert len(in_file) == expected
    file_ids = {s.span_id for s in in_file}
    assert len(file_ids) == expected

    recorded = otlp_http_recorder.spans()
    assert {s.span_id.hex() for s in recorded} == file_ids
    assert len(recorded) == expected

    transactions = spotlight.wait_for_transactions(FINISHED + 1, timeout_s=15)
    assert len(transactions) == FINISHED + 1
    sentry_ids = {t["contexts"]["trace"]["span_id"] for t in transactions} | {
        s["span_id"] for t in transactions for s in t["spans"]
    }
    assert sentry_ids == file_ids


def test_a_session_open_at_exit_is_ended_marked_incomplete_and_exported(
    otlp_http_recorder: OtlpHttpRecorder, spotlight: Spotlight, tmp_path: Path
) -> None:
    path = tmp_path / "traces.jsonl"
    result = run_child(
        HERE / "child_exit.py", "1", env=env_for(otlp_http_recorder, spotlight, path)
    )

    assert_quiet_exit(result)
    open_trace_id = result.stdout.strip()

    [left_open] = [
        s
        for s in file_spans(path)
        if s.attributes.get("gen_ai.conversation.id") == "left-open"
        and s.name.startswith("invoke_workflow")
    ]
    assert left_open.trace_id == open_trace_id
    assert left_open.attributes["agent_trace.session.incomplete"] is True
    assert left_open.attributes["agent_trace.session.outcome"] == "incomplete"
    assert int(left_open.raw["endTimeUnixNano"]) >= int(left_open.raw["startTimeUnixNano"]) > 0
    [turn] = [s for s in file_spans(path) if s.parent_id == left_open.span_id]
    assert turn.name == "invoke_agent legal"

    [recorded] = [s for s in otlp_http_recorder.spans() if s.span_id.hex() == left_open.span_id]
    assert attributes_of(recorded)["agent_trace.session.incomplete"] is True

    transactions = spotlight.wait_for_transactions(2, timeout_s=15)
    [open_tx] = [t for t in transactions if t["contexts"]["trace"]["trace_id"] == open_trace_id]
    assert open_tx["contexts"]["trace"]["data"]["agent_trace.session.incomplete"] is True
    assert [s["description"] for s in open_tx["spans"]] == ["invoke_agent legal"]


def test_a_turn_open_at_exit_is_ended_marked_incomplete_before_its_session(
    otlp_http_recorder: OtlpHttpRecorder, spotlight: Spotlight, tmp_path: Path
) -> None:
    path = tmp_path / "traces.jsonl"
    result = run_child(
        HERE / "child_exit.py",
        "1",
        "--open-turn",
        env=env_for(otlp_http_recorder, spotlight, path),
    )

    assert_quiet_exit(result)
    open_trace_id = result.stdout.strip()

    by_name = {s.name: s for s in file_spans(path) if s.trace_id == open_trace_id}
    assert set(by_name) == {
        "invoke_workflow review",
        "invoke_agent legal",
        "invoke_agent ethics",
        "consensus_round majority",
    }
    session = by_name["invoke_workflow review"]
    turn = by_name["invoke_agent ethics"]
    rnd = by_name["consensus_round majority"]
    assert turn.parent_id == session.span_id
    assert rnd.parent_id == turn.span_id
    assert session.attributes["agent_trace.session.incomplete"] is True
    for child in (turn, rnd):
        assert child.attributes["agent_trace.incomplete"] is True
        assert 0 < int(child.raw["startTimeUnixNano"]) <= int(child.raw["endTimeUnixNano"])
    # The innermost first, then outwards: no span ends after its parent.
    assert int(rnd.raw["endTimeUnixNano"]) <= int(turn.raw["endTimeUnixNano"])
    assert int(turn.raw["endTimeUnixNano"]) <= int(session.raw["endTimeUnixNano"])
    assert "agent_trace.incomplete" not in by_name["invoke_agent legal"].attributes

    recorded = {s.span_id.hex(): s for s in otlp_http_recorder.spans()}
    for child in (turn, rnd):
        assert attributes_of(recorded[child.span_id])["agent_trace.incomplete"] is True

    # Ended before their session, they are in its Sentry transaction.
    transactions = spotlight.wait_for_transactions(2, timeout_s=15)
    [open_tx] = [t for t in transactions if t["contexts"]["trace"]["trace_id"] == open_trace_id]
    tx_spans = {s["description"]: s for s in open_tx["spans"]}
    assert set(tx_spans) == {
        "invoke_agent legal",
        "invoke_agent ethics",
        "consensus_round majority",
    }
    assert tx_spans["invoke_agent ethics"]["data"]["agent_trace.incomplete"] is True
    assert tx_spans["consensus_round majority"]["data"]["agent_trace.incomplete"] is True

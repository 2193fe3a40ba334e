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

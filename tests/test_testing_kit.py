"""The `agent_trace.testing` kit: capture in memory, then ask questions about the span tree."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan

import agent_trace
from agent_trace.pipeline.sinks.memory import MemorySink
from agent_trace.testing import CapturedSpans, capture_spans


def build_review() -> None:
    with agent_trace.session("review", session_id="s1") as s:
        with s.turn("ethics"):  # noqa: SIM117 - the nesting is the tree under test
            with s.policy_check("privacy"):
                pass
        with s.consensus_round("majority", participants=["a", "b"]) as rnd:
            rnd.vote("a", "approve")
            rnd.vote("b", "approve")


def test_fixture_captures_the_spans_of_the_test(agent_trace_spans: CapturedSpans) -> None:
    build_review()

    assert sorted(s.name for s in agent_trace_spans.spans) == [
        "consensus_round majority",
        "invoke_agent ethics",
        "invoke_workflow review",
        "policy_check privacy",
        "vote a",
        "vote b",
    ]


def test_fixture_starts_empty_and_configured(agent_trace_spans: CapturedSpans) -> None:
    assert agent_trace_spans.spans == []
    assert agent_trace.settings() is not None


def test_spans_are_delivered_before_the_block_exits(agent_trace_spans: CapturedSpans) -> None:
    with agent_trace.session("review"):
        pass

    # No flush needed: the memory sink is fed as each span ends.
    assert len(agent_trace_spans.spans) == 1


def test_one_returns_the_single_match_and_fails_with_the_candidates() -> None:
    with capture_spans() as captured:
        build_review()

        assert captured.one("invoke_agent ethics").name == "invoke_agent ethics"
        with pytest.raises(AssertionError, match="found 2") as info:
            captured.one(prefix="vote ")
        assert "vote a" in str(info.value)
        with pytest.raises(AssertionError, match="found 0"):
            captured.one("invoke_agent nobody")


def test_find_matches_name_prefix_and_attributes() -> None:
    with capture_spans() as captured:
        build_review()

        assert [s.name for s in captured.find(prefix="vote ", gen_ai__agent__name="b")] == [
            "vote b"
        ]
        assert captured.find("vote a", gen_ai__agent__name="b") == []
        participants = captured.find(agent_trace__consensus__participants=["a", "b"])
        assert [s.name for s in participants] == ["consensus_round majority"]


def test_tree_helpers_walk_the_session() -> None:
    with capture_spans() as captured:
        build_review()

        root = captured.session("s1")
        assert captured.sessions() == [root]
        assert [t.name for t in captured.turns(root)] == ["invoke_agent ethics"]
        [rnd] = captured.rounds(root)
        assert [v.name for v in captured.votes(rnd)] == ["vote a", "vote b"]
        assert [c.name for c in captured.children(root)] == [
            "invoke_agent ethics",
            "consensus_round majority",
        ]
        assert len(captured.descendants(root)) == 5
        assert captured.parent(root) is None
        assert captured.parent(rnd) is root
        assert captured.tree(root).splitlines() == [
            "invoke_workflow review",
            "  invoke_agent ethics",
            "    policy_check privacy",
            "  consensus_round majority",
            "    vote a",
            "    vote b",
        ]
        captured.assert_no_orphans()


def test_assert_no_orphans_fails_when_a_parent_is_missing() -> None:
    with capture_spans() as captured:
        build_review()
        root = captured.one("invoke_workflow review")
        # The same spans as if the session span had never arrived.
        sink = MemorySink()
        sink.export([s for s in captured.spans if s is not root])
        partial = CapturedSpans(sink, InMemoryMetricReader())

        with pytest.raises(AssertionError, match="invoke_agent ethics"):
            partial.assert_no_orphans()


def test_clear_forgets_what_was_captured() -> None:
    with capture_spans() as captured:
        build_review()
        captured.clear()

        assert captured.spans == []


def test_metrics_are_readable() -> None:
    with capture_spans() as captured:
        build_review()

        metrics = captured.metrics()
        assert metrics["agent_trace.consensus.rounds"] == [
            ({"algorithm": "majority", "outcome": "consensus"}, 1)
        ]
        assert metrics["agent_trace.sessions"] == [
            ({"task_type": "review", "outcome": "completed"}, 1)
        ]


def test_capture_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("SENTRY_DSN", "http://key@127.0.0.1:9/1")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")

    with capture_spans("kit") as captured:
        settings = agent_trace.settings()
        assert settings is not None
        assert settings.sinks == ()
        assert settings.sample_rate == 1.0
        build_review()
        assert len(captured.spans) == 6


def test_capture_shuts_the_pipeline_down_afterwards() -> None:
    with capture_spans():
        assert agent_trace.settings() is not None

    assert agent_trace.settings() is None


def test_capture_sees_spans_as_the_sinks_do_scrubbed() -> None:
    with capture_spans() as captured:
        with agent_trace.session("review", api_key="sk-live-0123456789abcdefghij"):
            pass

        attrs = captured.one("invoke_workflow review").attributes
        assert "0123456789abcdef" not in str(attrs["agent_trace.session.api_key"])


def test_capture_sees_spans_as_the_sinks_do_sampled() -> None:
    with capture_spans(sample_rate=0.0) as captured:
        build_review()

        assert captured.spans == []


def test_captured_spans_are_sdk_readable_spans(agent_trace_spans: CapturedSpans) -> None:
    build_review()

    assert all(isinstance(s, ReadableSpan) for s in agent_trace_spans.spans)

"""Hostile input: awkward attribute values, a 300-agent round, a corrupt environment.

Awkward values go in through the public API only (session extras, turn attributes, votes);
what comes out must follow the one conversion rule of `agent_trace._attributes`, identically in
the memory sink and in the local file read back, without an exception or a flood of warnings.
"""

# ruff: noqa: SIM117

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

import agent_trace
from agent_trace import _log
from agent_trace._attributes import MAX_VALUE_LENGTH, to_attribute
from agent_trace.testing import capture_spans
from tests.reliability._support import file_spans, run_child


class FailingStr:
    """An object whose every text form raises, as some proxies and lazy objects do."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    __repr__ = __str__


class FailingEq(FailingStr):
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparison either")

    __hash__ = object.__hash__


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.just(b"\xff\xfe\xfa invalid utf-8 \xc3\x28"),
    st.just("x" * 1_000_000),
    st.just("\ud800 lone surrogate"),
    st.builds(FailingStr),
    st.builds(FailingEq),
)
awkward = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4),
    ),
    max_leaves=12,
)


def comparable(value: Any) -> Any:
    """Sequences as lists, as the local file gives them back."""
    if isinstance(value, tuple):
        return list(value)
    return value


def expected_attribute(value: Any) -> Any:
    converted = to_attribute(value)
    if isinstance(converted, str):
        # The file is UTF-8 JSON: a lone surrogate cannot be written as itself.
        converted = converted.encode("utf-8", "replace").decode("utf-8")
    return comparable(converted)


def test_awkward_values_follow_one_rule_in_every_sink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _log._reset_for_tests()
    caplog.set_level(logging.WARNING)
    path = tmp_path / "traces.jsonl"
    given_values: dict[str, Any] = {}

    with capture_spans(local_file=True, local_path=path) as captured:

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(session_value=awkward, turn_value=awkward, vote_value=awkward)
        def run(session_value: Any, turn_value: Any, vote_value: Any) -> None:
            example = f"e{len(given_values)}"
            given_values[example] = (session_value, turn_value, vote_value)
            with agent_trace.session(
                "review", session_id=example, odd=session_value, marker="kept"
            ) as s:
                with s.turn("ethics", odd=turn_value) as turn:
                    turn.set_attribute("agent_trace.turn.odd_set", turn_value)
                    turn.set_attributes({"agent_trace.turn.odd_many": vote_value, "n": 1})
                with s.consensus_round("majority", participants=["a", "b"]) as rnd:
                    rnd.vote("a", vote_value, rationale=vote_value)
                    with rnd.voter("b") as voter:
                        voter.cast(vote_value, rationale=turn_value)
                s.set_outcome(session_value)

        run()
        assert agent_trace.force_flush(timeout_s=10)
        memory = captured.spans

    assert len(memory) == len(given_values) * 5
    in_file = {s.span_id: s for s in file_spans(path)}
    assert len(in_file) == len(memory)

    for span in memory:
        attrs = dict(span.attributes or {})
        written = in_file[f"{span.context.span_id:016x}"].attributes
        # One rule, every sink: the file holds exactly what the memory sink got.
        assert {k: comparable(v) for k, v in attrs.items()} == {
            k: v for k, v in written.items()
        } | {k: comparable(v) for k, v in attrs.items() if _is_surrogate_text(v)}
        for value in attrs.values():
            assert not (isinstance(value, float) and not math.isfinite(value))
            if isinstance(value, str):
                assert len(value) <= MAX_VALUE_LENGTH + 40
        session_value, turn_value, vote_value = given_values[attrs["gen_ai.conversation.id"]]
        if span.name.startswith("invoke_workflow"):
            assert attrs["agent_trace.session.marker"] == "kept"
            assert comparable(attrs.get("agent_trace.session.odd")) == comparable(
                to_attribute(session_value)
            )
            assert attrs["agent_trace.session.task_type"] == "review"
        elif span.name.startswith("invoke_agent"):
            assert attrs["n"] == 1
            assert attrs["gen_ai.agent.name"] == "ethics"
            assert comparable(attrs.get("agent_trace.turn.odd_set")) == comparable(
                to_attribute(turn_value)
            )
            assert comparable(attrs.get("agent_trace.turn.odd_many")) == comparable(
                to_attribute(vote_value)
            )
        elif span.name.startswith("vote"):
            # Rationales are content: never kept without content capture, whatever their type.
            assert "agent_trace.vote.rationale" not in attrs
            assert attrs["agent_trace.vote.side"] in ("for", "against", "abstain")
        assert attrs["agent_trace.constitution.hash"] == "unset"

    # Warnings are rate-limited: no message template twice, whatever the number of examples.
    templates = Counter((r.name, str(r.msg)) for r in caplog.records)
    assert all(n == 1 for n in templates.values()), templates


def _is_surrogate_text(value: Any) -> bool:
    return isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value)


@given(value=awkward)
@settings(max_examples=200, deadline=None)
def test_the_rule_itself_never_raises_and_yields_attribute_types(value: Any) -> None:
    converted = to_attribute(value)
    assert converted is None or isinstance(converted, (str, bool, int, float, list, tuple))
    if isinstance(converted, (list, tuple)):
        assert len({type(v) for v in converted}) <= 1


# -- 10. a round over 300 agents -------------------------------------------------------------


def test_a_300_agent_round_is_truncated_to_the_limits_with_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _log._reset_for_tests()
    caplog.set_level(logging.WARNING)
    agents = [f"agent-{i:03d}" for i in range(300)]

    with capture_spans() as captured:
        with agent_trace.session("assembly", agents=agents) as s:
            turn_contexts = []
            for agent in agents:
                with s.turn(agent) as turn:
                    turn_contexts.append(turn.span.get_span_context())
            scores = {f"agent_trace.consensus.score.{a}": i / 300 for i, a in enumerate(agents)}
            with s.consensus_round(
                "weighted_vote", participants=agents, threshold=0.66, **scores
            ) as rnd:
                for context in turn_contexts:
                    rnd.span.add_link(context)
                for index, agent in enumerate(agents):
                    rnd.vote(agent, "approve" if index % 3 else "reject", weight=1.0)
                result = rnd.conclude()

    round_span = captured.one("consensus_round weighted_vote")
    attrs = round_span.attributes
    assert len(attrs) == 128
    assert round_span.dropped_attributes >= 300 - 128
    assert len(round_span.links) == 128
    assert round_span.dropped_links == 300 - 128
    # What names the span survived the limit, and so did the result set last.
    assert attrs["sentry.op"] == "agent_trace.consensus.round"
    assert attrs["agent_trace.constitution.hash"] == "unset"
    assert attrs["gen_ai.conversation.id"] == s.session_id
    assert attrs["agent_trace.consensus.votes.for"] == result.votes_for == 200
    assert attrs["agent_trace.consensus.outcome"] == "consensus"
    assert len(captured.votes(round_span)) == 300
    session_span = captured.one("invoke_workflow assembly")
    assert len(session_span.attributes["agent_trace.session.agents"]) == 128
    # The SDK's line per dropped attribute is let through once.
    templates = Counter((r.name, str(r.msg)) for r in caplog.records)
    assert all(n == 1 for n in templates.values()), templates


def test_links_added_after_the_limit_never_raise() -> None:
    with capture_spans() as captured:
        with agent_trace.session("assembly") as s:
            with s.consensus_round("majority") as rnd:
                for index in range(1000):
                    rnd.span.add_link(
                        trace.SpanContext(index + 1, index + 1, is_remote=True),
                        {"i": index},
                    )
    assert captured.one("consensus_round majority").dropped_links == 1000 - 128


# -- 11. corrupt configuration from the environment -----------------------------------------


@pytest.mark.parametrize(
    ("env", "variable", "fix"),
    [
        ({"SENTRY_DSN": "http://127.0.0.1:9/0"}, "SENTRY_DSN", "KEY@HOST/PROJECT_ID"),
        ({"SENTRY_DSN": "https://secretkey@sentry.invalid/not-a-number"}, "SENTRY_DSN", "DSN"),
        ({"OTEL_TRACES_SAMPLER_ARG": "abc"}, "OTEL_TRACES_SAMPLER_ARG", "0.0"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG",
            "1.0",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1: 4317"},
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "127.0.0.1:4317"},
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://",
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ({"AGENT_TRACE_MAX_QUEUE_SIZE": "-5"}, "AGENT_TRACE_MAX_QUEUE_SIZE", "use"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "OTEL_EXPORTER_OTLP_HEADERS", "k1=v1"),
        ({"CONSTITUTIONAL_HASH": "not hex!"}, "CONSTITUTIONAL_HASH", "hex"),
    ],
)
def test_a_corrupt_variable_is_named_with_its_fix(
    env: dict[str, str], variable: str, fix: str
) -> None:
    with pytest.raises(agent_trace.ConfigurationError) as caught:
        agent_trace.configure("bad-env", _env=env)
    message = str(caught.value)
    assert message.startswith(f"{variable}="), message
    assert "Fix:" in message
    assert fix in message.split("Fix:", 1)[1] or fix in message
    # The DSN's key is a credential: it is never echoed.
    assert "secretkey" not in message
    assert agent_trace.settings() is None


def test_a_corrupt_environment_fails_at_start_up_naming_the_variable() -> None:
    result = run_child(
        "import agent_trace; agent_trace.configure('svc')",
        env={"OTEL_TRACES_SAMPLER_ARG": "abc", "OTEL_SERVICE_NAME": "svc"},
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("agent_trace._config.ConfigurationError: OTEL_TRACES_SAMPLER_ARG=")
    assert "'abc'" in last_line
    assert "Fix:" in last_line


# -- a host that seeds the random module ---------------------------------------------------


def test_a_host_seeding_random_still_gets_distinct_ids() -> None:
    """Reproducible simulations reseed `random`; found when hypothesis did exactly that."""
    import random

    with capture_spans() as captured:
        for _ in range(3):
            random.seed(0)
            with agent_trace.session("episode") as s, s.turn("agent"):
                pass
    trace_ids = {x.context.trace_id for x in captured.spans}
    span_ids = {x.context.span_id for x in captured.spans}
    assert len(trace_ids) == 3
    assert len(span_ids) == 6

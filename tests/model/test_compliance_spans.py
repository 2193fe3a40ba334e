"""Policy checks, constitutional violations and `@track_constitutional_compliance`."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

import agent_trace
from agent_trace import ConstitutionalViolationError, _log
from agent_trace.testing import CapturedSpans, capture_spans

HASH = "cdd01ef066bc6cf2"


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans(constitution_hash=HASH) as captured:
        yield captured


def test_passed_check_is_compliant(spans: CapturedSpans) -> None:
    with agent_trace.session("review", session_id="s") as s, s.policy_check("privacy") as check:
        check.passed()

    span = spans.one("policy_check privacy")
    assert spans.parent(span) is spans.one("invoke_workflow review")
    attrs = span.attributes
    assert attrs["sentry.op"] == "agent_trace.compliance.check"
    assert attrs["agent_trace.constitution.hash"] == HASH
    assert attrs["gen_ai.conversation.id"] == "s"
    assert attrs["agent_trace.compliance.policy"] == "privacy"
    assert attrs["agent_trace.compliance.result"] == "compliant"
    assert span.status.status_code is StatusCode.UNSET


def test_check_without_a_verdict_counts_as_passed(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s, s.policy_check("privacy"):
        pass

    assert spans.one("policy_check privacy").attributes["agent_trace.compliance.result"] == (
        "compliant"
    )


async def test_violation_found_by_a_check_is_data_not_an_error(spans: CapturedSpans) -> None:
    async with agent_trace.session("review") as s, s.policy_check("privacy") as check:
        check.violation("data_leak", severity="high", enforcement="block", principle=3)

    span = spans.one("policy_check privacy")
    attrs = span.attributes
    assert attrs["agent_trace.compliance.result"] == "violation"
    assert attrs["agent_trace.compliance.violation.type"] == "data_leak"
    assert attrs["agent_trace.compliance.severity"] == "high"
    assert attrs["agent_trace.compliance.enforcement"] == "block"
    assert attrs["agent_trace.compliance.principle"] == 3
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs
    assert spans.one("invoke_workflow review").status.status_code is StatusCode.UNSET


def test_checks_and_violations_are_counted(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s:
        with s.policy_check("privacy") as check:
            check.violation("data_leak", severity="high")
        with s.policy_check("privacy") as check:
            check.passed()

    metrics = spans.metrics()
    assert sorted(metrics["agent_trace.compliance.checks"], key=repr) == sorted(
        [
            ({"policy": "privacy", "result": "violation"}, 1),
            ({"policy": "privacy", "result": "compliant"}, 1),
        ],
        key=repr,
    )
    assert metrics["agent_trace.violations"] == [
        ({"violation_type": "data_leak", "severity": "high"}, 1)
    ]


# -- ConstitutionalViolationError -------------------------------------------------------------


def test_constructing_a_violation_has_no_side_effects(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s, s.turn("ethics"):
        error = ConstitutionalViolationError("shares PII", violation_type="privacy")

    assert error.violation_type == "privacy"
    assert error.severity == "high"
    assert str(error) == "shares PII"
    for span in spans.spans:
        assert span.status.status_code is StatusCode.UNSET, span.name
        assert not span.events, span.name
        assert "error.type" not in span.attributes, span.name
    assert "agent_trace.violations" not in spans.metrics()


def test_violation_raised_through_traced_code_is_recorded(spans: CapturedSpans) -> None:
    error = ConstitutionalViolationError("shares PII", "privacy", severity="critical")

    with pytest.raises(ConstitutionalViolationError) as info:  # noqa: SIM117
        with agent_trace.session("review"), agent_trace.turn("ethics"):
            with agent_trace.policy_check("privacy"):
                raise error

    assert info.value is error
    check = spans.one("policy_check privacy")
    turn = spans.one("invoke_agent ethics")
    session = spans.one("invoke_workflow review")

    # The span where it was raised holds the exception and the violation.
    [event] = check.events
    assert event.name == "exception"
    assert event.attributes["exception.type"].endswith("ConstitutionalViolationError")
    assert check.attributes["agent_trace.compliance.result"] == "violation"
    assert check.attributes["agent_trace.compliance.violation.type"] == "privacy"
    assert check.attributes["agent_trace.compliance.severity"] == "critical"

    # Every span it escapes is ERROR with the kind named, the exception recorded once only.
    for span in (check, turn, session):
        assert span.status.status_code is StatusCode.ERROR, span.name
        assert span.attributes["error.type"] == "constitutional_violation", span.name
    assert not turn.events
    assert not session.events
    assert spans.metrics()["agent_trace.violations"] == [
        ({"violation_type": "privacy", "severity": "critical"}, 1)
    ]


async def test_violation_raised_in_async_code_is_recorded(spans: CapturedSpans) -> None:
    with pytest.raises(ConstitutionalViolationError):
        async with agent_trace.session("review") as s, s.turn("ethics"):
            raise ConstitutionalViolationError("unfair", "fairness")

    turn = spans.one("invoke_agent ethics")
    assert turn.status.status_code is StatusCode.ERROR
    assert turn.attributes["error.type"] == "constitutional_violation"
    assert turn.attributes["agent_trace.compliance.violation.type"] == "fairness"
    assert [e.name for e in turn.events] == ["exception"]


def test_violation_caught_inside_the_block_leaves_the_outer_spans_alone(
    spans: CapturedSpans,
) -> None:
    with agent_trace.session("review") as s:
        try:
            with s.turn("ethics"):
                raise ConstitutionalViolationError("unfair", "fairness")
        except ConstitutionalViolationError:
            s.set_outcome("blocked")

    assert spans.one("invoke_agent ethics").status.status_code is StatusCode.ERROR
    session = spans.one("invoke_workflow review")
    assert session.status.status_code is StatusCode.UNSET
    assert session.attributes["agent_trace.session.outcome"] == "blocked"


def test_violation_survives_pickling() -> None:
    error = ConstitutionalViolationError("x", "privacy", "low", policy="p", principle=2)

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.message, copy.violation_type, copy.severity, copy.policy, copy.principle) == (
        "x",
        "privacy",
        "low",
        "p",
        2,
    )


# -- user exceptions ------------------------------------------------------------------------


class AgentCrashedError(Exception):
    pass


def test_user_exception_passes_through_unchanged(spans: CapturedSpans) -> None:
    error = AgentCrashedError("model timed out")

    with pytest.raises(AgentCrashedError) as info:  # noqa: SIM117
        with agent_trace.session("review") as s, s.turn("ethics"):
            with s.consensus_round("majority"), s.policy_check("p"):
                raise error

    assert info.value is error
    assert info.value.args == ("model timed out",)
    turn = spans.one("invoke_agent ethics")
    assert turn.status.status_code is StatusCode.ERROR
    assert turn.attributes["error.type"].endswith("AgentCrashedError")
    # The message may be content: with capture off, only the type reaches the status.
    assert turn.status.description == "AgentCrashedError"
    assert spans.one("policy_check p").attributes["agent_trace.compliance.result"] == "error"


async def test_user_exception_passes_through_async_scopes_unchanged(spans: CapturedSpans) -> None:
    error = AgentCrashedError("boom")

    with pytest.raises(AgentCrashedError) as info:
        async with agent_trace.session("review") as s, s.turn("ethics"):
            raise error

    assert info.value is error


# -- @track_constitutional_compliance ----------------------------------------------------------


@dataclass
class Verdict:
    compliant: bool
    violation_type: str | None = None
    severity: str | None = None


@agent_trace.track_constitutional_compliance
def check_fairness(proposal: str) -> bool:
    return proposal != "unfair"


@agent_trace.track_constitutional_compliance(policy="privacy")
def check_privacy_sync(proposal: str) -> Any:
    return {"compliant": False, "violation_type": "pii", "severity": "medium"}


@agent_trace.track_constitutional_compliance(policy="privacy")
async def check_privacy_async(proposal: str) -> Any:
    return Verdict(compliant=False, violation_type="pii", severity="medium")


@agent_trace.track_constitutional_compliance
async def check_async_bare(proposal: str) -> bool:
    return True


def test_bare_decorator_names_the_check_after_the_function(spans: CapturedSpans) -> None:
    with agent_trace.session("review"):
        assert check_fairness("fair") is True
        assert check_fairness("unfair") is False

    results = [
        s.attributes["agent_trace.compliance.result"]
        for s in spans.find("policy_check check_fairness")
    ]
    assert sorted(results) == ["compliant", "violation"]


async def test_bare_decorator_on_an_async_function(spans: CapturedSpans) -> None:
    async with agent_trace.session("review"):
        assert await check_async_bare("x") is True

    span = spans.one("policy_check check_async_bare")
    assert span.attributes["agent_trace.compliance.result"] == "compliant"
    assert spans.parent(span) is spans.one("invoke_workflow review")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_policy_decorator_reads_the_verdict(spans: CapturedSpans, is_async: bool) -> None:
    async with agent_trace.session("review", session_id="s"):
        if is_async:
            result = await check_privacy_async("share the file")
            assert isinstance(result, Verdict)
        else:
            result = check_privacy_sync("share the file")
            assert result == {"compliant": False, "violation_type": "pii", "severity": "medium"}

    span = spans.one("policy_check privacy")
    attrs = span.attributes
    assert attrs["agent_trace.compliance.result"] == "violation"
    assert attrs["agent_trace.compliance.violation.type"] == "pii"
    assert attrs["agent_trace.compliance.severity"] == "medium"
    assert attrs["gen_ai.conversation.id"] == "s"
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_decorated_check_lets_a_raised_violation_through(
    spans: CapturedSpans, is_async: bool
) -> None:
    error = ConstitutionalViolationError("leaks data", "privacy")

    @agent_trace.track_constitutional_compliance(policy="privacy")
    def raising_sync() -> None:
        raise error

    @agent_trace.track_constitutional_compliance(policy="privacy")
    async def raising_async() -> None:
        raise error

    with pytest.raises(ConstitutionalViolationError) as info:
        if is_async:
            await raising_async()
        else:
            raising_sync()

    assert info.value is error
    span = spans.one("policy_check privacy")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "constitutional_violation"
    assert span.attributes["agent_trace.compliance.result"] == "violation"


def test_decorator_keeps_the_function_name() -> None:
    assert check_privacy_sync.__name__ == "check_privacy_sync"
    assert check_fairness.__name__ == "check_fairness"


def test_violation_in_a_sampled_out_trace_is_still_counted() -> None:
    # Errors are not sampled away with their trace: the violation metric (and the Sentry
    # issue) must not depend on which traces were kept.
    with capture_spans(sample_rate=0.0) as captured:
        with pytest.raises(ConstitutionalViolationError):  # noqa: SIM117
            with agent_trace.session("review"), agent_trace.turn("ethics"):
                raise ConstitutionalViolationError("x", "privacy", severity="low")

        assert captured.spans == []
        assert captured.metrics()["agent_trace.violations"] == [
            ({"violation_type": "privacy", "severity": "low"}, 1)
        ]


# -- verdicts that cannot be read ------------------------------------------------------------


@dataclass
class LooseVerdict:
    compliant: Any


class RaisingVerdict:
    @property
    def compliant(self) -> bool:
        raise RuntimeError("verdict service down")


UNREADABLE: dict[str, Any] = {
    "text 'false'": "false",
    "text 'true'": "true",
    "zero": 0,
    "one": 1,
    "dict with compliant 'no'": {"compliant": "no"},
    "dict with compliant 1": {"compliant": 1},
    "dict without compliant": {"violation_type": "pii"},
    "object with compliant 'yes'": LooseVerdict("yes"),
}


def test_a_check_that_raises_on_violations_and_returns_nothing_passes(
    spans: CapturedSpans,
) -> None:
    @agent_trace.track_constitutional_compliance(policy="privacy")
    def check(text: str) -> None:
        if "ssn" in text:
            raise agent_trace.ConstitutionalViolationError("pii found", "pii")

    with agent_trace.session("review"):
        check("a harmless proposal")
        with pytest.raises(agent_trace.ConstitutionalViolationError):
            check("a proposal with an ssn")

    results = sorted(
        s.attributes["agent_trace.compliance.result"] for s in spans.find("policy_check privacy")
    )
    assert results == ["compliant", "violation"]


@pytest.mark.parametrize("verdict", UNREADABLE.values(), ids=list(UNREADABLE))
def test_a_verdict_that_is_not_a_bool_is_an_error_never_compliant(
    spans: CapturedSpans, verdict: Any
) -> None:
    @agent_trace.track_constitutional_compliance(policy="privacy")
    def check() -> Any:
        return verdict

    with agent_trace.session("review"):
        assert check() is verdict

    span = spans.one("policy_check privacy")
    assert span.attributes["agent_trace.compliance.result"] == "error"
    assert span.attributes["error.type"] == "unreadable_verdict"
    assert span.status.status_code is StatusCode.ERROR
    assert spans.metrics()["agent_trace.compliance.checks"] == [
        ({"policy": "privacy", "result": "error"}, 1)
    ]


def test_an_unreadable_verdict_is_logged_once_with_the_fix(
    spans: CapturedSpans, caplog: pytest.LogCaptureFixture
) -> None:
    @agent_trace.track_constitutional_compliance(policy="privacy")
    def check() -> Any:
        return {"compliant": "no"}

    _log._reset_for_tests()
    with caplog.at_level(logging.WARNING, logger="agent_trace"), agent_trace.session("review"):
        for _ in range(3):
            check()
    _log._reset_for_tests()

    [message] = [r.getMessage() for r in caplog.records if r.name.startswith("agent_trace")]
    assert "policy check privacy returned a dict whose `compliant` is a str" in message
    assert "Fix: return True/False" in message
    assert spans.metrics()["agent_trace.compliance.checks"] == [
        ({"policy": "privacy", "result": "error"}, 3)
    ]


def test_a_verdict_that_raises_when_read_is_an_error(spans: CapturedSpans) -> None:
    verdict = RaisingVerdict()

    @agent_trace.track_constitutional_compliance(policy="privacy")
    def check() -> Any:
        return verdict

    with agent_trace.session("review"):
        assert check() is verdict

    span = spans.one("policy_check privacy")
    assert span.attributes["agent_trace.compliance.result"] == "error"
    assert span.status.status_code is StatusCode.ERROR


def test_an_unreadable_verdict_of_a_sampled_out_check_is_still_counted_as_an_error() -> None:
    @agent_trace.track_constitutional_compliance(policy="privacy")
    def check() -> Any:
        return "false"

    with capture_spans(sample_rate=0.0) as captured:
        with agent_trace.session("review"):
            check()

        assert captured.spans == []
        assert captured.metrics()["agent_trace.compliance.checks"] == [
            ({"policy": "privacy", "result": "error"}, 1)
        ]


def test_is_compliant_is_read_when_compliant_is_missing(spans: CapturedSpans) -> None:
    @agent_trace.track_constitutional_compliance(policy="privacy")
    def check(ok: bool) -> Any:
        return {"is_compliant": ok, "violation_type": "pii"}

    with agent_trace.session("review"):
        check(True)
        check(False)

    results = sorted(
        s.attributes["agent_trace.compliance.result"] for s in spans.find("policy_check privacy")
    )
    assert results == ["compliant", "violation"]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


def test_a_violation_type_that_cannot_be_shown_keeps_the_violation(spans: CapturedSpans) -> None:
    @agent_trace.track_constitutional_compliance(policy="privacy")
    def check() -> Any:
        return {"compliant": False, "violation_type": Unprintable()}

    with agent_trace.session("review"):
        check()

    span = spans.one("policy_check privacy")
    assert span.attributes["agent_trace.compliance.result"] == "violation"
    assert span.status.status_code is StatusCode.UNSET

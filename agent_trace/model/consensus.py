"""Consensus rounds, votes, and the `@monitor_consensus` decorator."""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from opentelemetry import trace

from agent_trace import _attributes as A
from agent_trace._log import internal_error, warn_once
from agent_trace.model._scope import Scope, active_session, optional_tuple, set_converted

__all__ = ["ConsensusRound", "RoundResult", "Voter", "consensus_round", "monitor_consensus"]

_log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_FOR = frozenset({"approve", "approved", "for", "yes", "accept", "agree", "true", "1"})
_AGAINST = frozenset(
    {"reject", "rejected", "against", "no", "deny", "disagree", "block", "false", "0", "veto"}
)
_ABSTAIN = frozenset({"abstain", "none", "", "pass", "skip"})

# The round's attribute names, joined once rather than for every round.
_ALGORITHM = A.CONSENSUS + "algorithm"
_ROUND = A.CONSENSUS + "round"
_THRESHOLD = A.CONSENSUS + "threshold"
_QUORUM = A.CONSENSUS + "quorum"
_PARTICIPANTS = A.CONSENSUS + "participants"
_PARTICIPANTS_COUNT = A.CONSENSUS + "participants.count"
_VOTES_FOR = A.CONSENSUS + "votes.for"
_VOTES_AGAINST = A.CONSENSUS + "votes.against"
_VOTES_ABSTAIN = A.CONSENSUS + "votes.abstain"
_AGREEMENT = A.CONSENSUS + "agreement"
_OUTCOME = A.CONSENSUS + "outcome"
_DECISION = A.CONSENSUS + "decision"


def vote_side(value: Any) -> str:
    """Classify a vote value as `for`, `against` or `abstain` (unknown values abstain)."""
    if value is True:
        return "for"
    if value is False:
        return "against"
    if value is None:
        return "abstain"
    try:
        text = str(value).strip().lower()
    except Exception:
        # A value that cannot be shown as text (its __str__ fails) is no recognisable vote.
        return "abstain"
    if text in _FOR:
        return "for"
    if text in _AGAINST:
        return "against"
    return "abstain"


@dataclass(frozen=True)
class RoundResult:
    """The tally of a consensus round.

    `agreement` is the larger of the weighted shares for and against among non-abstaining
    votes; the round reaches consensus when it meets `threshold`, `quorum` votes were cast and
    the two sides are not tied (a tie is never consensus, even at a threshold of 0.5).
    `decision` is `approve`, `reject` or None.
    """

    outcome: str
    decision: str | None
    agreement: float
    votes_for: int
    votes_against: int
    votes_abstain: int

    @property
    def consensus_achieved(self) -> bool:
        return self.outcome == "consensus"


class Voter(Scope):
    """A timed vote: `async with rnd.voter("legal") as v: v.cast("approve")`."""

    _op = "agent_trace.vote"

    def __init__(self, rnd: ConsensusRound, agent: str) -> None:
        self.agent = A.name_text(agent)
        self._round = rnd
        self.cast_value: Any = None
        super().__init__(rnd._session, f"vote {self.agent}", {A.AGENT_NAME: agent}, convert=True)

    def _parent(self) -> tuple[Any, trace.Span]:
        context = self._round._child_context()
        return context, trace.get_current_span(context)

    def cast(
        self,
        value: Any,
        *,
        weight: float = 1.0,
        confidence: float | None = None,
        rationale: str | None = None,
    ) -> None:
        """Record the vote; the round tallies it."""
        self.cast_value = value
        try:
            counted = self._round._tally(self.agent, value, weight)
            self.set_attributes(self._round._vote_attributes(value, counted, confidence, rationale))
        except Exception:
            internal_error(_log, "recording a timed vote")


class ConsensusRound(Scope):
    """A consensus round: span `consensus_round {algorithm}`, its votes as children.

    Example:
        >>> with session.consensus_round("weighted_vote", participants=agents, threshold=0.66) as r:
        ...     r.vote("ethics", "approve", weight=2.0)
        ...     result = r.conclude()
    """

    _op = "agent_trace.consensus.round"

    def __init__(
        self,
        session: Any,
        algorithm: str,
        *,
        participants: Sequence[str] = (),
        threshold: float = 0.5,
        quorum: int | None = None,
        round: int | None = None,
        **attrs: Any,
    ) -> None:
        self.algorithm = algorithm if type(algorithm) is str else A.name_text(algorithm)
        self.participants = optional_tuple(participants)
        self.threshold = _threshold(threshold)
        self.quorum = _quorum(quorum, len(self.participants))
        self.result: RoundResult | None = None
        # agent -> (value, usable weight) and agent -> side; conclude() tallies them afresh,
        # so a vote changed many times leaves no rounding residue in the weights.
        self._votes: dict[str, tuple[Any, float]] = {}
        self._sides: dict[str, str] = {}
        raw = {
            _ALGORITHM: algorithm,
            _ROUND: round,
            _THRESHOLD: self.threshold,
            _QUORUM: self.quorum,
            _PARTICIPANTS: self.participants or None,
            # The list is cut at the attribute limit; the count is always whole.
            _PARTICIPANTS_COUNT: len(self.participants),
            **attrs,
        }
        super().__init__(session, f"consensus_round {self.algorithm}", raw, convert=True)

    @property
    def votes(self) -> dict[str, Any]:
        """The latest vote per agent, as (value, weight counted)."""
        return dict(self._votes)

    def _child_context(self) -> Any:
        if self._span.get_span_context().is_valid:
            return trace.set_span_in_context(self._span)
        return None

    def _tally(self, agent: str, value: Any, weight: Any) -> float:
        """Count the agent's vote (replacing an earlier one); returns the weight it counts with."""
        counted = _usable_weight(weight)
        self._votes[agent] = (value, counted)
        self._sides[agent] = vote_side(value)
        return counted

    def _vote_attributes(
        self, value: Any, weight: float, confidence: float | None, rationale: str | None
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            # Converted by the attribute rule, which survives a failing __str__.
            A.VOTE + "value": value
            if isinstance(value, (str, bool, int, float))
            else A.to_attribute(value),
            A.VOTE + "side": vote_side(value),
            A.VOTE + "weight": weight,
            A.VOTE + "confidence": confidence,
        }
        pipeline = self._pipeline
        if rationale is not None and pipeline is not None and pipeline.capture_content:
            attrs[A.VOTE + "rationale"] = rationale
        return attrs

    def vote(
        self,
        agent: str,
        value: Any,
        *,
        weight: float = 1.0,
        confidence: float | None = None,
        rationale: str | None = None,
    ) -> None:
        """Record an agent's vote now, as a `vote {agent}` child span of the round."""
        try:
            counted = self._tally(agent, value, weight)
            if not self._span.is_recording() or self._pipeline is None:
                return
            attrs = self._common_attributes(self._pipeline)
            attrs[A.SENTRY_OP] = Voter._op
            attrs[A.AGENT_NAME] = agent
            # The span carries the weight the vote counted with, so the votes in a trace add
            # up to the round's agreement (an unusable weight is logged, and recorded as 0).
            attrs.update(
                A.to_attributes(self._vote_attributes(value, counted, confidence, rationale))
            )
            span = self._pipeline.tracer.start_span(
                f"vote {A.name_text(agent)}", context=self._child_context(), attributes=attrs
            )
            span.end()
        except Exception:
            internal_error(_log, "recording a vote")

    def voter(self, agent: str) -> Voter:
        """A timed vote span for an agent that takes a while to decide."""
        return Voter(self, agent)

    def conclude(self, outcome: str | None = None, *, decision: str | None = None) -> RoundResult:
        """Tally the votes (or take `outcome`) and record the result on the round span."""
        counts = _NO_VOTES
        share_for = share_against = 0.0
        if self._sides:
            counts = {"for": 0, "against": 0, "abstain": 0}
            weights: dict[str, list[float]] = {"for": [], "against": [], "abstain": []}
            for agent, side in self._sides.items():
                counts[side] += 1
                weights[side].append(self._votes[agent][1])
            share_for, share_against = _shares(weights["for"], weights["against"])
        cast_total = len(self._sides)
        # Weights are finite and never negative, so this is a share already; the bound holds
        # whatever the float arithmetic does.
        agreement = min(1.0, max(0.0, share_for, share_against))
        decided = share_for + share_against > 0
        # A caller's outcome or decision is compared and used as a metric label: plain text.
        if outcome is not None:
            outcome = A.name_text(outcome)
        if decision is not None:
            decision = A.name_text(decision)
        # Ours are attribute values as they are; a caller's text goes through the rule.
        given = outcome is not None or decision is not None
        if outcome is None:
            if cast_total < self.quorum:
                outcome = "no_quorum"
            elif decided and agreement >= self.threshold and share_for != share_against:
                # A tie decides nothing, whatever the threshold.
                outcome = "consensus"
            else:
                outcome = "no_consensus"
        if decision is None and outcome == "consensus":
            decision = "approve" if share_for >= share_against else "reject"
        self.result = RoundResult(
            outcome=outcome,
            decision=decision,
            agreement=round(agreement, 6),
            votes_for=counts["for"],
            votes_against=counts["against"],
            votes_abstain=counts["abstain"],
        )
        span = self._span
        if span.is_recording():
            # Set as they are: counts and a share between 0 and 1 are attribute values already,
            # only the texts go through the attribute rule.
            result: dict[str, Any] = {
                _VOTES_FOR: counts["for"],
                _VOTES_AGAINST: counts["against"],
                _VOTES_ABSTAIN: counts["abstain"],
                _AGREEMENT: self.result.agreement,
                _OUTCOME: A.to_attribute(outcome) if given else outcome,
            }
            if decision is not None:
                result[_DECISION] = A.to_attribute(decision) if given else decision
            set_converted(span, result)
        return self.result

    def _on_exit(self, exc: BaseException | None, duration_s: float, recording: bool) -> None:
        if self.result is None:
            if exc is None:
                self.conclude()
            else:
                self.conclude("error")
        pipeline = self._pipeline
        if pipeline is not None and self.result is not None and pipeline.metrics.recording:
            labels = {"algorithm": self.algorithm, "outcome": self.result.outcome}
            pipeline.metrics.rounds.add(1, labels)
            pipeline.metrics.round_duration.record(duration_s, labels)


# The tally of a round without votes (never changed: `conclude` counts in a dict of its own).
_NO_VOTES = {"for": 0, "against": 0, "abstain": 0}


def _shares(weights_for: list[float], weights_against: list[float]) -> tuple[float, float]:
    """The weighted shares of the two sides; (0, 0) when no weight was cast for either."""
    # Scaled by the largest weight first: finite weights near the float limit would make the
    # sums overflow (and math.fsum raise).
    largest = max(weights_for + weights_against, default=0.0)
    if largest <= 0:
        return 0.0, 0.0
    total_for = math.fsum(w / largest for w in weights_for)
    total_against = math.fsum(w / largest for w in weights_against)
    decided = total_for + total_against
    return total_for / decided, total_against / decided


def _shown(value: Any) -> str:
    """A caller's value, short, for a log line (never raising)."""
    text = A.name_text(value)[:64]
    return repr(text) if isinstance(value, str) else text


def _finite(value: Any) -> float | None:
    """`value` as a finite float, or None (no number, NaN, infinite, or its conversion raises)."""
    try:
        number = float(value)
    except Exception:
        return None
    return number if math.isfinite(number) else None


def _threshold(value: Any) -> float:
    """The agreement a round needs; None or a value that is no finite number means 0.5."""
    if value is None:
        return 0.5
    if type(value) is float and math.isfinite(value):
        return value
    number = _finite(value)
    if number is None:
        warn_once(
            _log,
            "consensus.threshold",
            "agent-trace: consensus threshold %s is not a finite number; using 0.5",
            _shown(value),
        )
        return 0.5
    return number


def _quorum(value: Any, participants: int) -> int:
    """The votes a round needs: a whole number, rounded up; by default half the participants.

    None means the default; so does a value that is no finite non-negative number (text is read
    as a number: "3" is 3), with a warning. A quorum is compared on every `conclude()`, where a
    value of the wrong type would raise into the traced program.
    """
    default = math.ceil(participants / 2) if participants else 1
    if value is None:
        return default
    if type(value) is int and value >= 0:
        # Exact, even beyond the range of a float.
        return value
    number = _finite(value)
    if number is None or number < 0:
        warn_once(
            _log,
            "consensus.quorum",
            "agent-trace: consensus quorum %s is not a non-negative number of votes; using %d",
            _shown(value),
            default,
        )
        return default
    return math.ceil(number)


def _usable_weight(weight: Any) -> float:
    """A vote's weight as a finite float >= 0; anything else weighs nothing (with a warning).

    A negative weight would take weight from the other side and push the agreement past 1.
    """
    number = _finite(weight)
    if number is None or number < 0:
        warn_once(
            _log,
            "consensus.weight",
            "agent-trace: vote weight %s is not a finite non-negative number; the vote counts "
            "with weight 0",
            _shown(weight),
        )
        return 0.0
    return number


def consensus_round(
    algorithm: str,
    *,
    participants: Sequence[str] = (),
    threshold: float = 0.5,
    quorum: int | None = None,
    round: int | None = None,
    **attrs: Any,
) -> ConsensusRound:
    """A consensus round in the current session, parented to the current span."""
    return ConsensusRound(
        active_session(),
        algorithm,
        participants=participants,
        threshold=threshold,
        quorum=quorum,
        round=round,
        **attrs,
    )


# -- @monitor_consensus ---------------------------------------------------------------------------


def _field(result: Any, name: str) -> Any:
    if isinstance(result, Mapping):
        return result.get(name)
    return getattr(result, name, None)


def _participants(
    sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Sequence[str]:
    if sig is None:
        return ()
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return ()
    for name in ("participants", "agents"):
        value = bound.arguments.get(name)
        if value is None:
            continue
        if isinstance(value, Mapping):
            return [A.name_text(k) for k in value]
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_agent_name(v) for v in value]
    return ()


def _round_number(
    sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> int | None:
    if sig is None:
        return None
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    for name in ("round", "round_number"):
        value = bound.arguments.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _agent_name(value: Any) -> str:
    if isinstance(value, str):
        return value
    for attr in ("name", "agent", "id"):
        found = _field(value, attr)
        if found is not None:
            return A.name_text(found)
    return A.name_text(value)


def _weight(vote: Any) -> Any:
    # A weight of 0.0 is a real weight (an agent that deferred); only a missing one means 1.0.
    # Any other value goes to the round as given, which weighs an unusable one as nothing;
    # converting it here would raise and lose every vote after it.
    weight = _field(vote, "weight")
    return 1.0 if weight is None else weight


def _record_result(rnd: ConsensusRound, result: Any) -> None:
    """Read `votes`, `consensus_achieved`, `confidence` from the returned value (documented)."""
    votes = _field(result, "votes")
    if isinstance(votes, Mapping):
        for agent, value in votes.items():
            if isinstance(value, Mapping) or hasattr(value, "value"):
                rnd.vote(
                    str(agent),
                    _field(value, "value"),
                    weight=_weight(value),
                    confidence=_field(value, "confidence"),
                )
            else:
                rnd.vote(str(agent), value)
    elif isinstance(votes, (list, tuple)):
        for item in votes:
            agent = _field(item, "agent") or _field(item, "name")
            if agent is not None:
                rnd.vote(
                    str(agent),
                    _field(item, "value"),
                    weight=_weight(item),
                    confidence=_field(item, "confidence"),
                )
    achieved = _field(result, "consensus_achieved")
    confidence = _field(result, "confidence")
    if confidence is not None:
        rnd.set_attribute(A.CONSENSUS + "confidence", confidence)
    if achieved is None:
        rnd.conclude()
    else:
        rnd.conclude(
            "consensus" if achieved else "no_consensus", decision=_field(result, "decision")
        )


def monitor_consensus(algorithm: str, *, threshold: float = 0.5) -> Callable[[F], F]:
    """Trace a consensus function as a `consensus_round {algorithm}` span.

    Participants come from an argument named `participants` (or `agents`): a list of names,
    of objects with `name`/`agent`/`id`, or a mapping keyed by agent; the round number from an
    integer argument named `round` (or `round_number`), when there is one. The returned value (an
    object or a dict) may carry `consensus_achieved` (bool), `confidence` (float) and `votes`
    (a mapping agent -> value or -> {value, weight, confidence}, or a list of
    {agent, value, weight, confidence}); each vote becomes a `vote {agent}` child span. The
    function's return value and exceptions pass through untouched.

    Example:
        >>> @agent_trace.monitor_consensus("weighted_vote")
        ... async def build_consensus(participants, proposal):
        ...     votes = {"ethics": "approve", "legal": "approve"}
        ...     return {"consensus_achieved": True, "confidence": 0.8, "votes": votes}
    """

    def decorate(fn: F) -> F:
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None

        def open_round(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ConsensusRound:
            # The caller's arguments are read before the function runs: a participant or
            # round number that cannot be read costs the round its detail, never the call.
            try:
                participants = _participants(sig, args, kwargs)
                number = _round_number(sig, args, kwargs)
            except Exception:
                internal_error(_log, "reading the participants of a consensus round")
                participants, number = (), None
            return ConsensusRound(
                active_session(),
                algorithm,
                participants=participants,
                threshold=threshold,
                round=number,
            )

        def close(rnd: ConsensusRound, result: Any) -> None:
            try:
                _record_result(rnd, result)
            except Exception:
                internal_error(_log, "reading a consensus result")

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with open_round(args, kwargs) as rnd:
                    result = await fn(*args, **kwargs)
                    close(rnd, result)
                    return result

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with open_round(args, kwargs) as rnd:
                result = fn(*args, **kwargs)
                close(rnd, result)
                return result

        return cast(F, wrapper)

    return decorate

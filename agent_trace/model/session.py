"""Coordination sessions and agent turns."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
import os
import random
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode

from agent_trace import _attributes as A
from agent_trace import _runtime
from agent_trace._log import internal_error
from agent_trace.model._scope import Scope, active_session, optional_tuple
from agent_trace.model.consensus import ConsensusRound

_log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["Session", "Turn", "current_session", "session", "turn", "with_current_context"]

# Weak references to the sessions whose span started and has not ended (any thread), for the
# exit hook. A plain set: adding and discarding are single steps under the GIL, so no lock is
# needed, and a reference removes itself when its session is collected.
_open_sessions: set[weakref.ref[Session]] = set()

# Session ids come from a generator of our own, seeded by the OS (reseeded in a forked child)
# and out of reach of the host's `random.seed()`. Not `os.urandom` per session: it releases
# the GIL, and a thread waiting for it (an export thread) takes it, which cost 8 us a session
# in place (0.4 us in a loop of its own).
_id_random = random.Random(os.urandom(32))


def _reseed_ids() -> None:
    _id_random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed_ids)


class Session(Scope):
    """A coordination session: the root of one trace (or a child of an incoming request).

    Example:
        >>> import agent_trace
        >>> with agent_trace.session("ethical_review", agents=["ethics", "legal"]) as s:
        ...     with s.turn("ethics"):
        ...         pass
        ...     s.set_outcome("approved")
    """

    _op = "agent_trace.session"
    # This session's entry in `_open_sessions` while its span is open.
    _open_ref: weakref.ref[Session] | None = None

    def __init__(
        self,
        task_type: str,
        *,
        session_id: str | None = None,
        agents: Sequence[str] = (),
        complexity: float | None = None,
        **attrs: Any,
    ) -> None:
        if session_id is not None and type(session_id) is not str:
            # Text, as the conversation id attribute and the monitor's registry need it.
            session_id = A.name_text(session_id)
        self.session_id = session_id or _new_session_id()
        # Whether the id is an attribute value as it is (see `Scope._start`): ours always are.
        self._plain_id = session_id is None or len(self.session_id) <= A.MAX_VALUE_LENGTH
        # The call only for a name that is not a str (a turn's cost is counted in nanoseconds).
        self.task_type = task_type if type(task_type) is str else A.name_text(task_type)
        self.agents = optional_tuple(agents)
        self.outcome: str | None = None
        self._turns = itertools.count(1)
        # Weak references to this session's scopes whose span started and has not ended yet
        # (any thread); a reference removes itself when its scope is collected.
        self._open_children: set[weakref.ref[Scope]] = set()
        raw = {
            A.OPERATION_NAME: "invoke_workflow",
            A.WORKFLOW_NAME: task_type,
            A.SESSION_TASK_TYPE: task_type,
            A.SESSION_AGENTS: self.agents or None,
            A.SESSION_COMPLEXITY: complexity,
        }
        if attrs:
            raw.update({k if "." in k else f"agent_trace.session.{k}": v for k, v in attrs.items()})
        super().__init__(self, f"invoke_workflow {self.task_type}", raw, convert=True)

    def _start(self) -> None:
        super()._start()
        span = self._span
        if span.is_recording():
            self._open_ref = ref = weakref.ref(self, _open_sessions.discard)
            _open_sessions.add(ref)
            pipeline = self._pipeline
            if pipeline is not None:
                # Every span of the session carries its id: the scrubber learns it is clean
                # now, rather than scanning it on the first span (it checks the id's shape).
                pipeline.scrubber.learn_clean_id(A.CONVERSATION_ID, self.session_id)
        else:
            context = span.get_span_context()
            self._sampled_out = context.is_valid and not context.trace_flags.sampled

    def set_outcome(self, outcome: str) -> None:
        """Record how the session ended (approved, rejected, blocked, escalated, failed...)."""
        # Kept as text by the attribute rule: it also labels the sessions metric, which takes
        # no other type (and must never call a caller's failing __str__ again).
        converted = A.to_attribute(outcome)
        self.outcome = None if converted is None else str(converted)
        self.set_attribute(A.SESSION_OUTCOME, self.outcome)

    def _on_exit(self, exc: BaseException | None, duration_s: float, recording: bool) -> None:
        if self._open_ref is not None:
            _open_sessions.discard(self._open_ref)
        if self.outcome is None:
            if exc is None:
                self.outcome = "completed"
            elif isinstance(exc, asyncio.CancelledError):
                # Cancelled from outside (a timeout, a shutdown): not a failed coordination.
                self.outcome = "cancelled"
            else:
                self.outcome = "failed"
            self.set_attribute(A.SESSION_OUTCOME, self.outcome)
        pipeline = self._pipeline
        if pipeline is not None and pipeline.metrics.recording:
            labels = {"task_type": self.task_type, "outcome": self.outcome}
            pipeline.metrics.sessions.add(1, labels)
            pipeline.metrics.session_duration.record(duration_s, labels)

    def _end_incomplete(self) -> None:
        """End a session still open at interpreter exit, marked incomplete, so it is exported.

        Its open turns, rounds and checks end first, marked `agent_trace.incomplete`, the
        innermost first: a sink that assembles a session from its spans (Sentry transactions)
        sends it when the session ends, and a child ending later would miss it.
        """
        self._ended = True
        if not self._span.is_recording() or self._pid != os.getpid():
            return
        # A copy taken at once: threads still running may end their scopes meanwhile.
        alive = [ref() for ref in list(self._open_children)]
        children = sorted((c for c in alive if c is not None), key=_started_at, reverse=True)
        for child in children:
            try:
                child._end_incomplete()
            except Exception:
                internal_error(_log, f"ending an open {type(child).__name__} at exit")
        self._span.set_attribute(A.SESSION_INCOMPLETE, True)
        self._span.set_attribute(A.SESSION_OUTCOME, self.outcome or "incomplete")
        self._span.set_status(Status(StatusCode.UNSET))
        self._span.end()

    # -- children -------------------------------------------------------------------------------

    def turn(
        self,
        agent: str,
        role: str | None = None,
        *,
        remote: bool = False,
        agent_id: str | None = None,
        **attrs: Any,
    ) -> Turn:
        """An agent's turn in this session: span `invoke_agent {agent}`."""
        return Turn(self, agent, role=role, remote=remote, agent_id=agent_id, **attrs)

    def consensus_round(
        self,
        algorithm: str,
        *,
        participants: Sequence[str] = (),
        threshold: float = 0.5,
        quorum: int | None = None,
        round: int | None = None,
        **attrs: Any,
    ) -> Any:
        """A consensus round: span `consensus_round {algorithm}`; votes are its children."""
        return ConsensusRound(
            self,
            algorithm,
            participants=participants,
            threshold=threshold,
            quorum=quorum,
            round=round,
            **attrs,
        )

    def policy_check(self, policy: str, **attrs: Any) -> Any:
        """A constitutional check: span `policy_check {policy}`."""
        from agent_trace.model.compliance import PolicyCheck

        return PolicyCheck(self, policy, **attrs)

    def handoff(self, source: str, target: str, reason: str | None = None, **attrs: Any) -> Any:
        """One agent handing the work to another: span `handoff from {source} to {target}`."""
        from agent_trace.model.coordination import Handoff

        return Handoff(self, source, target, reason=reason, **attrs)

    def resolve_conflict(self, parties: Sequence[str], strategy: str, **attrs: Any) -> Any:
        """Resolving disagreement between agents: span `resolve_conflict {strategy}`."""
        from agent_trace.model.coordination import ConflictResolution

        return ConflictResolution(self, parties, strategy, **attrs)

    def send_message(
        self,
        sender: str,
        recipient: str,
        *,
        message_type: str,
        message_id: str | None = None,
        content: Any = None,
        **attrs: Any,
    ) -> Any:
        """A message between agents: PRODUCER span `send {recipient}`; `content` is kept only
        with content capture on. Pass its `headers()` along with the message."""
        from agent_trace.model.coordination import MessageSend

        return MessageSend(
            self,
            sender,
            recipient,
            message_type=message_type,
            message_id=message_id,
            content=content,
            **attrs,
        )

    def process_message(
        self, recipient: str, message: Any = None, *, message_type: str | None = None, **attrs: Any
    ) -> Any:
        """Processing a message: CONSUMER span `process {recipient}` linked to its send
        (`message` is the MessageSend, its SpanContext, or the headers that travelled)."""
        from agent_trace.model.coordination import MessageProcess

        return MessageProcess(self, recipient, message, message_type=message_type, **attrs)

    def escalate(self, trigger: str, severity: str = "medium", **attrs: Any) -> Any:
        """Escalation to a human: span `escalate {trigger}`."""
        from agent_trace.model.coordination import Escalation

        return Escalation(self, trigger, severity=severity, **attrs)


class Turn(Scope):
    """One agent's turn: span `invoke_agent {agent}`, CLIENT when the agent is remote."""

    _op = "gen_ai.invoke_agent"

    def __init__(
        self,
        session: Session | None,
        agent: str,
        *,
        role: str | None = None,
        remote: bool = False,
        agent_id: str | None = None,
        **attrs: Any,
    ) -> None:
        self.agent = agent if type(agent) is str else A.name_text(agent)
        index = next(session._turns) if session is not None else None
        raw = {
            A.OPERATION_NAME: "invoke_agent",
            A.AGENT_NAME: agent,
            A.AGENT_ID: agent_id,
            A.TURN_INDEX: index,
            A.AGENT_ROLE: role,
            **attrs,
        }
        super().__init__(session, f"invoke_agent {self.agent}", raw, convert=True)
        if remote:
            self._kind = SpanKind.CLIENT

    def _on_exit(self, exc: BaseException | None, duration_s: float, recording: bool) -> None:
        pipeline = self._pipeline
        if pipeline is not None and pipeline.metrics.recording:
            pipeline.metrics.turn_duration.record(duration_s, {"agent": self.agent})


def _started_at(scope: Scope) -> float:
    return scope._start_s


def _new_session_id() -> str:
    """What `uuid.uuid4().hex` gives (random bits, version 4), without a UUID object."""
    value = _id_random.getrandbits(128)
    # The version (4) and RFC 4122 variant bits, as uuid4 sets them.
    value = (value & ~(0xF000 << 64)) | (0x4000 << 64)
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)
    return f"{value:032x}"


def session(
    task_type: str,
    *,
    session_id: str | None = None,
    agents: Sequence[str] = (),
    complexity: float | None = None,
    **attrs: Any,
) -> Session:
    """Open a coordination session; use with `with` or `async with`.

    Args:
        task_type: what kind of coordination this is (low cardinality: it names the span).
        session_id: your id for the session; a random one is made when omitted.
        agents: the agents taking part (a lone name counts as a list of one).
        complexity: a score of your own, recorded as `agent_trace.session.complexity`.
        **attrs: extra attributes; a bare key `k` becomes `agent_trace.session.k`.
    """
    return Session(task_type, session_id=session_id, agents=agents, complexity=complexity, **attrs)


def current_session() -> Session | None:
    """The session the calling code runs in, for code deep in a call stack."""
    return active_session()


def turn(agent: str, role: str | None = None, *, remote: bool = False, **attrs: Any) -> Turn:
    """An agent turn in the current session (or a standalone one when there is none)."""
    return Turn(active_session(), agent, role=role, remote=remote, **attrs)


def _end_open_sessions() -> None:
    """At interpreter exit: end every session still open, after its open turns and rounds."""
    # TODO: a scope opened outside any session (a standalone `agent_trace.turn`) is not
    # tracked, so one still open at exit is never exported. A module-level set of weak
    # references, as sessions keep for their scopes, would cover it for about 0.3 us a span.
    # A copy taken at once (threads still running may end their sessions meanwhile).
    refs = list(_open_sessions)
    _open_sessions.clear()
    for ref in refs:
        open_session = ref()
        if open_session is not None:
            open_session._end_incomplete()


_runtime.add_exit_hook(_end_open_sessions)


def with_current_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap `fn` to run in the caller's current context (span and session), wherever it runs.

    Thread pools and `loop.run_in_executor` do not carry context variables into their threads;
    a tool call handed to them would start a trace of its own. Wrap it at the hand-over. When
    `fn` runs after the turn has ended, what it opens lands under the newest scope still open
    (the session), or under the ended span when none is: it is exported either way.

    Example:
        >>> with session.turn("ops"):
        ...     pool.submit(agent_trace.with_current_context(call_tool), "search")
        ...     await loop.run_in_executor(None, agent_trace.with_current_context(call_tool))
    """
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def run_in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        # A copied Context can be entered by one thread at a time: copy again per call.
        return context.copy().run(fn, *args, **kwargs)

    return run_in_context

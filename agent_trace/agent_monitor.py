"""The imperative style, for teams migrating from start/complete calls to context managers.

Sessions started here are kept in a bounded registry: at most `max_open_sessions` at once and
none older than `max_age_s`. A session pushed out of it (never completed: a crashed
coordinator) is ended with outcome `abandoned` and `agent_trace.session.incomplete=true`, so
it is exported rather than leaked, and counted in `AgentMonitor.abandoned`.

Example:
    >>> from agent_trace import agent_monitor
    >>> agent_monitor.start_coordination_session("s-1", "ethical_review", ["ethics"], 0.4)
    >>> agent_monitor.complete_coordination_session("s-1", success=True)
    True
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from agent_trace import _attributes as A
from agent_trace.model.session import Session

__all__ = [
    "AgentMonitor",
    "complete_coordination_session",
    "default_monitor",
    "start_coordination_session",
]


class AgentMonitor:
    """A bounded registry of sessions opened with `start_coordination_session`."""

    def __init__(
        self,
        max_open_sessions: int = 10_000,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_open_sessions < 1:
            raise ValueError(f"max_open_sessions={max_open_sessions!r}: must be at least 1")
        self.max_open_sessions = max_open_sessions
        self.max_age_s = max_age_s
        self.abandoned = 0
        self._clock = clock
        self._open: OrderedDict[str, tuple[float, Session]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    def start_coordination_session(
        self,
        session_id: str,
        task_type: str,
        agents: Sequence[str] = (),
        complexity_score: float | None = None,
        **attrs: Any,
    ) -> Session:
        """Open a session span now; complete it later by id, from any thread or task."""
        session_id = _key(session_id)
        session = Session(
            task_type, session_id=session_id, agents=agents, complexity=complexity_score, **attrs
        )
        # Not entered as a context manager: start and completion may happen in different
        # tasks, so the session is not made current here (pass it on, or use `with`).
        session._start()
        now = self._clock()
        with self._lock:
            stale = self._evict(now, replacing=session_id)
            self._open[session_id] = (now, session)
        for old in stale:
            self._abandon(old)
        return session

    def complete_coordination_session(
        self, session_id: str, success: bool, *, outcome: str | None = None, **attrs: Any
    ) -> bool:
        """End the session; returns False when no open session has that id."""
        session_id = _key(session_id)
        with self._lock:
            entry = self._open.pop(session_id, None)
        if entry is None:
            return False
        session = entry[1]
        session.set_attributes({f"agent_trace.session.{k}": v for k, v in attrs.items()})
        session.set_outcome(outcome or ("completed" if success else "failed"))
        session._finish(None)
        return True

    def _evict(self, now: float, replacing: str) -> list[Session]:
        stale: list[Session] = []
        if replacing in self._open:
            stale.append(self._open.pop(replacing)[1])
        while self._open:
            started, session = next(iter(self._open.values()))
            if len(self._open) < self.max_open_sessions and now - started <= self.max_age_s:
                break
            self._open.popitem(last=False)
            stale.append(session)
        return stale

    def _abandon(self, session: Session) -> None:
        self.abandoned += 1
        session.set_attribute(A.SESSION_INCOMPLETE, True)
        session.set_outcome("abandoned")
        session._finish(None)


def _key(session_id: str) -> str:
    """The id as the registry holds it: text, whatever was passed (a list would raise)."""
    # None passes as given: the session then makes a fresh id of its own, as `session()` does.
    if type(session_id) is str or session_id is None:
        return session_id
    return A.name_text(session_id)


default_monitor = AgentMonitor()


def start_coordination_session(
    session_id: str,
    task_type: str,
    agents: Sequence[str] = (),
    complexity_score: float | None = None,
    **attrs: Any,
) -> Session:
    """`AgentMonitor.start_coordination_session` on the process-wide default monitor."""
    return default_monitor.start_coordination_session(
        session_id, task_type, agents, complexity_score, **attrs
    )


def complete_coordination_session(
    session_id: str, success: bool, *, outcome: str | None = None, **attrs: Any
) -> bool:
    """`AgentMonitor.complete_coordination_session` on the process-wide default monitor."""
    return default_monitor.complete_coordination_session(
        session_id, success, outcome=outcome, **attrs
    )

"""The machinery every model context manager shares: start a span, make it current, end it.

A scope is usable with `with` and `async with`. Whatever happens inside agent-trace while
starting or ending a span is logged once and skipped; the user's exception always passes
through unchanged (`__exit__` never returns True).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import SpanKind, Status, StatusCode

from agent_trace import _attributes as A
from agent_trace import _runtime
from agent_trace._log import internal_error, warn_once
from agent_trace.pipeline.provider import SPAN_LIMITS

if TYPE_CHECKING:
    from agent_trace._runtime import Pipeline
    from agent_trace.model.session import Session

_log = logging.getLogger("agent_trace.model")

# The session the current code runs in; set by Session and by scopes opened from its handle.
current_session_var: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "agent_trace_session", default=None
)
# The scope (and so its session) also rides in the OpenTelemetry context beside the span: code
# that hands work to a thread the OpenTelemetry way (attaching a captured `Context`, as the OTel
# docs and the threading instrumentation do) copies no contextvars, yet must still find its
# session; and a scope exiting out of order can tell that a context belongs to an ended scope.
_SCOPE_KEY = otel_context.create_key("agent_trace.scope")
# The key OpenTelemetry keeps the current span under, found through the public API: a scope's
# context is then built with one copy of the current one instead of one per value set.
_SPAN_KEY = next(
    key
    for key, value in trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context()).items()
    if value is trace.INVALID_SPAN
)
# Attributes a span takes before the SDK would drop the oldest (see `Scope._start`).
_MAX_ATTRIBUTES = SPAN_LIMITS.max_attributes or 0
# Bound on the walk past ended scopes' contexts (a scope re-entered later could close a loop).
_MAX_HOPS = 10_000
# What otel_context.attach() returns with the default (contextvars) runtime context.
_ContextVarToken = contextvars.Token
# This process's id, kept here rather than asked of the OS twice a span; a forked child
# updates it (see `Scope._pid`).
_process_id = os.getpid()


def _after_fork_in_child() -> None:
    global _process_id
    _process_id = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def active_session() -> Session | None:
    """The session of the current span if the OTel context carries one, else of the code."""
    # Typed Any rather than cast(): this runs for every span, and cast() is a call at runtime.
    scope: Any = otel_context.get_value(_SCOPE_KEY)
    if scope is not None:
        session: Session | None = scope._session
        if session is not None:
            return session
    return current_session_var.get()


def optional_tuple(values: Iterable[Any] | str | None) -> tuple[Any, ...]:
    """An optional list of names (agents, participants, parties); None means none given.

    A lone name counts as a list of one, not as its characters; anything that cannot be read
    as a list (a number, an iterator that raises) counts as none, logged once.
    """
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    try:
        return tuple(values)
    except Exception:
        warn_once(
            _log,
            "optional-tuple",
            "agent-trace: a list of agent names could not be read from a %s; "
            "the span records none (pass a list of str)",
            type(values).__name__,
        )
        return ()


def _violation_type() -> type[BaseException]:
    from agent_trace.model.compliance import ConstitutionalViolationError

    return ConstitutionalViolationError


class Scope:
    """Base class of Session, Turn, ConsensusRound and the other span scopes.

    Subclasses set `_name`, `_kind`, `_op` and fill `_attrs` before `__enter__`, and may
    override `_on_exit` to add attributes that are known only at the end. Attributes given
    with `convert=True` are raw values, converted by the attribute rule only once a span will
    record them: a scope that is not traced (not configured, sampled out) skips the work.

    A scope entered again while open is counted, not started twice: its span ends at the last
    exit; an exit without an enter does nothing. Scopes may exit out of order (a session
    before its turn): the context left current is never one whose span has ended.

    A scope exited in another thread or task than the one that entered it still ends and
    exports its span, but cannot make the entering context current again there (a context
    variable is reset only where it was set): that is logged once, and the ended span, still
    current where it was entered, is passed over when later scopes choose their parent.

    Parent choice: a parent that is valid but not recording is either sampled out upstream
    (its sampled flag is off: the scope reuses it and records nothing, as the parent-based
    sampler would drop it anyway) or has ended (sampled flag on). Under an ended parent a
    scope is still started and exported, never skipped: it is parented on the newest
    agent-trace scope before it that is still open (a tool run after its turn ended lands in
    the session), else on the ended span itself, which OpenTelemetry allows (a turn opened
    on a session handle after the session's block ended stays in the session's trace). A
    session whose agent-trace parents have all ended starts from the context before them.
    """

    _op = "agent_trace.span"
    _links: Sequence[trace.Link] = ()
    # Lifecycle state, as class defaults so that a scope costs nothing to set them up:
    # how many times the scope was entered and not yet exited, whether its span was ended,
    # the context current before it was entered, and the session current before it set its own.
    _depth = 0
    _ended = False
    _previous: otel_context.Context | None = None
    _session_before: Session | None = None
    # This scope's entry in its session's set of open scopes.
    _child_ref: weakref.ref[Scope] | None = None
    # Set on a session whose span the sampler dropped: its scopes skip the parent lookups.
    _sampled_out = False
    # The rest of a scope's state, until it starts a span: the span (non-recording), the
    # pipeline that started it, the tokens that restore the context, when it started, and the
    # process that started it (a forked child inherits open scopes, and ending them there
    # would export a second copy of the parent's span, same ids).
    _kind = SpanKind.INTERNAL
    _span: trace.Span = trace.INVALID_SPAN
    _pipeline: Pipeline | None = None
    _token: contextvars.Token[otel_context.Context] | None = None
    _session_token: contextvars.Token[Session | None] | None = None
    _start_s = 0.0
    _pid = 0

    def __init__(
        self, session: Session | None, name: str, attrs: dict[str, Any], *, convert: bool = False
    ) -> None:
        self._session = session
        self._name = name
        self._attrs = attrs
        self._convert = convert

    # -- public -------------------------------------------------------------------------------

    @property
    def span(self) -> trace.Span:
        """The underlying OpenTelemetry span (non-recording when not traced)."""
        return self._span

    @property
    def recording(self) -> bool:
        return self._span.is_recording()

    @property
    def trace_id(self) -> str:
        return f"{self._span.get_span_context().trace_id:032x}"

    @property
    def span_id(self) -> str:
        return f"{self._span.get_span_context().span_id:016x}"

    def set_attribute(self, key: str, value: Any) -> None:
        """Set an attribute, converted by the documented rule (see `agent_trace._attributes`)."""
        if not self._span.is_recording():
            return
        converted = A.to_attribute(value)
        if converted is None:
            return
        if type(key) is str and key:
            set_converted(
                self._span, {key: tuple(converted) if type(converted) is list else converted}
            )
        else:
            self._span.set_attribute(key, converted)

    def set_attributes(self, values: Mapping[str, Any]) -> None:
        if self._span.is_recording():
            set_converted(self._span, A.to_attributes(values))

    # -- lifecycle ----------------------------------------------------------------------------

    def _parent(self) -> tuple[otel_context.Context | None, trace.Span]:
        """The context to start the span in (None: the current one) and the parent span in it.

        Parent on the current span when it belongs to our session's trace, else on the session.
        Nesting follows the code; a handle used from a foreign context still lands in its session.
        """
        current = trace.get_current_span()
        session = self._session
        if session is None or session is self:
            return None, current
        current_ctx = current.get_span_context()
        session_span = session._span
        if (
            current_ctx.is_valid
            and current_ctx.trace_id == session_span.get_span_context().trace_id
        ):
            return None, current
        return trace.set_span_in_context(session_span), session_span

    def _past_ended_scopes(
        self, parent_ctx: otel_context.Context | None
    ) -> otel_context.Context | None:
        """The parent context to use instead of one whose agent-trace scope has ended.

        Walks back to the newest scope still open. A scope of a session stays in the trace:
        when every scope back to the first has ended, it keeps the outermost ended one. A
        session may leave it, and then starts from the context before them (often a root).
        """
        start = otel_context.get_current() if parent_ctx is None else parent_ctx
        ctx = start
        for _ in range(_MAX_HOPS):
            scope: Any = ctx.get(_SCOPE_KEY)
            if scope is None or not scope._ended or scope._previous is None:
                break
            before: otel_context.Context = scope._previous
            if (
                self._session is not self
                and not trace.get_current_span(before).get_span_context().is_valid
            ):
                break
            ctx = before
        return parent_ctx if ctx is start else ctx

    def _common_attributes(self, pipeline: Pipeline) -> dict[str, Any]:
        session = self._session
        attrs = {
            A.CONSTITUTION_HASH: pipeline.constitution_hash or A.UNSET_HASH,
            A.SENTRY_OP: self._op,
        }
        if session is not None:
            attrs[A.CONVERSATION_ID] = session.session_id
        return attrs

    def _start(self) -> None:
        pipeline = _runtime.current()
        if pipeline is None:
            return
        self._pipeline = pipeline
        session = self._session
        if session is not None and session._sampled_out and session is not self:
            # The session's trace is sampled out, so is every span in it (parent-based).
            self._span = session._span
            return
        parent_ctx, parent = self._parent()
        if not parent.is_recording():
            parent_span_ctx = parent.get_span_context()
            if parent_span_ctx.trace_flags.sampled:
                # Sampled in, yet not recording: ended (or remote). Started all the same.
                parent_ctx = self._past_ended_scopes(parent_ctx)
            elif self._session is not self and parent_span_ctx.is_valid:
                # Sampled out upstream: the parent-based sampler would drop us too. Skip the work.
                self._span = parent
                return
        if self._convert:
            self._attrs = A.to_attributes(self._attrs)
            self._convert = False
        attrs = self._common_attributes(pipeline)
        attrs.update(self._attrs)
        # The SDK cleans every attribute value a span starts with again, a Python call or more
        # per value (a third of a span's start, and what the raw SDK pays too). Ours passed the
        # stricter rule already (`_attributes`), so the new span takes them as they are, when
        # they fit its limits; anything else goes the SDK's way.
        prefill = (
            len(attrs) <= _MAX_ATTRIBUTES
            and "" not in attrs
            and (session is None or session._plain_id)
        )
        span = pipeline.tracer.start_span(
            self._name,
            context=parent_ctx,
            kind=self._kind,
            attributes=None if prefill else attrs,
            links=self._links,
            record_exception=False,
            set_status_on_exception=False,
        )
        if prefill:
            stored = getattr(span, "_attributes", None)
            if (
                type(stored) is BoundedAttributes
                and not stored._dict
                and (stored.maxlen is None or len(attrs) <= stored.maxlen)
            ):
                # Nothing else holds the span yet: no lock, no other writer.
                stored._dict.update(attrs)
            else:
                span.set_attributes(attrs)
        self._span = span
        self._pid = _process_id
        if session is not None and session is not self:
            # Ended, marked incomplete, before its session if still open at interpreter exit.
            # Held weakly: a scope abandoned open (its agent died) must not stay in memory, and
            # the reference's callback takes it out of the set when it is collected.
            children = session._open_children
            self._child_ref = ref = weakref.ref(self, children.discard)
            children.add(ref)

    def __enter__(self) -> Any:
        if self._depth:
            # Entered again while open: the span is current already, and the last exit ends it.
            self._depth += 1
            return self
        self._depth = 1
        self._ended = False
        try:
            self._start()
            session = self._session
            if self._span is not trace.INVALID_SPAN:
                previous = otel_context.get_current()
                values = previous.copy()
                values[_SPAN_KEY] = self._span
                values[_SCOPE_KEY] = self
                self._previous = previous
                self._token = otel_context.attach(otel_context.Context(values))
            if session is not None:
                before = current_session_var.get()
                if before is not session:
                    self._session_before = before
                    self._session_token = current_session_var.set(session)
            self._start_s = time.perf_counter()
        except Exception:
            internal_error(_log, f"starting {type(self).__name__}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._depth != 1:
            # An inner exit of a scope entered twice, or an exit without an enter.
            self._depth = max(0, self._depth - 1)
            return
        self._depth = 0
        try:
            self._finish(exc)
        except Exception:
            internal_error(_log, f"ending {type(self).__name__}")
        finally:
            self._restore_context()

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _restore_context(self) -> None:
        token, self._token = self._token, None
        session_token, self._session_token = self._session_token, None
        try:
            if session_token is not None:
                current_session_var.reset(session_token)
                restored = current_session_var.get()
                if restored is not None and restored._ended:
                    current_session_var.set(_live_session(restored))
            if token is not None:
                # The token's own reset rather than otel_context.detach(): the same call, but a
                # token made in another context raises here instead of being logged at ERROR
                # with a traceback on every such exit.
                if type(token) is _ContextVarToken:
                    token.var.reset(token)
                else:
                    otel_context.detach(token)
                # The context restored is the one before this scope. Its scope has ended only
                # when scopes exited out of order (a session before its turn): never leave an
                # ended span current, or every later span of the thread becomes its child.
                stale: Any = None if self._previous is None else self._previous.get(_SCOPE_KEY)
                if stale is not None and stale._ended:
                    self._leave_ended_scopes()
        except ValueError:
            # A context variable is reset only in the context it was set in: this scope was
            # entered in another thread or task. Its span is ended either way; where it was
            # entered it stays current, and later scopes there pass over it (see _start).
            warn_once(
                _log,
                "exited-in-another-context",
                "agent-trace: a %s was exited in another thread or task than the one that "
                "entered it; its span is exported, but it stays the current span where it was "
                "entered (agent-trace passes over it, other instrumentations may not). Exit "
                "each scope where it was entered.",
                type(self).__name__,
            )
        except Exception:
            internal_error(_log, f"restoring the context after {type(self).__name__}")

    def _leave_ended_scopes(self) -> None:
        """Make current the newest context before this one whose scope is still open."""
        ctx = self._previous
        if ctx is None or otel_context.get_current() is not ctx:
            return  # The detach did not happen here: another context than the one entered in.
        for _ in range(_MAX_HOPS):
            scope = cast("Scope | None", ctx.get(_SCOPE_KEY))
            if scope is None or not scope._ended or scope._previous is None:
                break
            ctx = scope._previous
        otel_context.attach(ctx)

    def _finish(self, exc: BaseException | None) -> None:
        span = self._span
        self._ended = True
        child_ref = self._child_ref
        if child_ref is not None and self._session is not None:
            self._session._open_children.discard(child_ref)
        if self._pid and self._pid != _process_id:
            # Inherited through fork: the parent process owns this span and ends it.
            return
        duration_s = time.perf_counter() - self._start_s
        recording = span.is_recording() and self._pipeline is not None
        if exc is not None:
            try:
                self._record_exception(exc)
            except Exception:
                # An exception that cannot be described (its __str__ raises) must not cost the
                # span: it is still ended and exported, without the description.
                internal_error(_log, f"recording an exception in {type(self).__name__}")
        self._on_exit(exc, duration_s, recording)
        # Only a span this scope started records; a reused sampled-out parent never does.
        if recording:
            if getattr(span, "dropped_attributes", 0):
                self._restore_identity()
            span.end()

    def _end_incomplete(self) -> None:
        """End the span of a scope still open at interpreter exit, marked incomplete."""
        self._ended = True
        span = self._span
        if not span.is_recording() or self._pid != os.getpid():
            return
        span.set_attribute(A.INCOMPLETE, True)
        span.end()

    def _restore_identity(self) -> None:
        """Set the attributes every span must carry again after the limit pushed them out.

        The SDK makes room for a new attribute by dropping the oldest one, and ours are set
        first; setting them again drops (and counts) the oldest of the caller's instead.
        """
        pipeline = self._pipeline
        if pipeline is None:
            return
        identity = self._common_attributes(pipeline)
        for key in _IDENTITY_KEYS:
            if key in self._attrs:
                identity[key] = self._attrs[key]
        self._span.set_attributes(identity)

    def _on_exit(self, exc: BaseException | None, duration_s: float, recording: bool) -> None:
        """Subclass hook: add end-of-scope attributes and record metrics."""

    def _record_exception(self, exc: BaseException) -> None:
        span = self._span
        pipeline = self._pipeline
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            if span.is_recording():
                span.set_attribute(A.CANCELLED, True)
            return
        if pipeline is None:
            return
        violation_cls = _violation_type()
        is_violation = isinstance(exc, violation_cls)
        if not span.is_recording():
            # Sampled out: there is no span to mark, but a violation is still reported once
            # (metric, alert policy, Sentry issue): errors are not sampled away with traces.
            if is_violation and not getattr(exc, "_agent_trace_recorded", False):
                from agent_trace.model.compliance import report_violation

                _mark(exc)
                report_violation(exc, self)  # type: ignore[arg-type]
            return
        error_type = "constitutional_violation" if is_violation else _qualname(exc)
        span.set_attribute(A.ERROR_TYPE, getattr(exc, "error_type", None) or error_type)
        message = f"{type(exc).__name__}: {exc}" if pipeline.capture_content else type(exc).__name__
        span.set_status(Status(StatusCode.ERROR, message))
        if not getattr(exc, "_agent_trace_recorded", False):
            # The innermost scope records the exception event and reports it once; outer scopes
            # it escapes through are marked ERROR only.
            span.record_exception(exc, escaped=True)
            _mark(exc)
            if is_violation:
                from agent_trace.model.compliance import report_violation

                report_violation(exc, self)  # type: ignore[arg-type]


# Attributes that name what a span is; they outrank the caller's extras when the limit is hit.
_IDENTITY_KEYS = (A.OPERATION_NAME, A.AGENT_NAME, A.WORKFLOW_NAME)


def set_converted(span: trace.Span, values: Mapping[str, Any]) -> None:
    """Set attributes converted by the rule (`to_attributes`) on a span, as the SDK's
    `set_attributes` stores them, without its cleaning of each value again (see `_start`).

    Under the span's lock, as the SDK's own call: nothing is set on an ended span. Values that
    would push out older ones at the limit, an empty key, or a span of another kind go the
    SDK's way.
    """
    stored = getattr(span, "_attributes", None)
    lock = getattr(span, "_lock", None)
    if type(stored) is BoundedAttributes and lock is not None and "" not in values:
        with lock:
            if getattr(span, "_end_time", 0) is None and not stored._immutable:
                items = stored._dict
                limit = stored.maxlen
                if limit is not None and len(items) + len(values) <= min(limit, _MAX_ATTRIBUTES):
                    with stored._lock:
                        for key in values:
                            # A key set again moves to the end, as the SDK's own setter does.
                            items.pop(key, None)
                        items.update(values)
                    return
    span.set_attributes(values)


def _live_session(session: Session | None) -> Session | None:
    """The newest session before `session` (by the scopes that made them current) still open."""
    for _ in range(_MAX_HOPS):
        if session is None or not session._ended:
            return session
        session = session._session_before
    return None


def _mark(exc: BaseException) -> None:
    # An exception class with __slots__ takes no new attribute; it is then reported again.
    with contextlib.suppress(Exception):
        exc._agent_trace_recorded = True  # type: ignore[attr-defined]


def _qualname(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )

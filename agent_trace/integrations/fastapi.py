"""FastAPI services in agent-trace's traces: one server span per request, and the constitution.

`instrument(app)` builds on OpenTelemetry's FastAPI instrumentation and adds what agent
services need on top of it:

- exactly one server span per request, whose parent comes from the caller's `traceparent`
  (or `sentry-trace`); malformed, oversized or repeated trace headers start a fresh trace, and
  incoming baggage is passed on but never copied into attributes (see
  `agent_trace.pipeline.propagation`). No span is made per ASGI send/receive message.
- an unhandled exception marks the server span ERROR with the exception recorded, and sends one
  Sentry error event linked to it; an error the app answers itself (a 400, say) is not an error
  of the span.
- the `Constitutional-Hash` request header: mode `observe` records a missing or different hash
  as a violation (a `policy_check constitutional_hash` span), mode `enforce` also refuses the
  request (428 when missing, 409 when different) with a JSON body.
- excluded URLs mean two things. Tracing: as OpenTelemetry defines it, a request is not traced
  when any pattern is found anywhere in its full URL (`/metrics` also leaves
  `/proposals/metrics` untraced). The hash check: skipped only when a pattern matches the
  request's whole path, as if anchored with `^...$` (`/metrics` exempts `/metrics` alone, `/`
  the index page alone); never decided by the Host header or the query. A path that is not
  exempt is checked whether or not it is traced.
- every header check is counted in `agent_trace.compliance.checks` and in the alert's
  compliance rate, passes and violations alike, whether or not the request is sampled.
- a health route answering the service name, the constitutional hash and each sink's state,
  neither traced nor checked.
- background tasks get a span of their own, linked to the request that scheduled them; the
  request's span ends with the last chunk of the response, before they run.
- spans still queued are flushed when the app's lifespan ends (uvicorn stopped by SIGTERM
  exits without running `atexit`).
- the server spans and the instrumentation's HTTP server metrics (request duration, active
  requests, sizes) go to the sinks and metric readers of the configuration in force, never to
  the global tracer or meter provider, which are the host program's.

Example:
    >>> import agent_trace
    >>> from agent_trace.integrations.fastapi import instrument
    >>> from fastapi import FastAPI
    >>> agent_trace.configure("ethics-agent")     # or from OTEL_SERVICE_NAME etc.
    >>> app = instrument(FastAPI(), constitutional_hash_mode="enforce")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from agent_trace.integrations import _missing_extra

try:
    import fastapi
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.util.http import parse_excluded_urls
    from starlette.background import BackgroundTask
    from starlette.middleware.errors import ServerErrorMiddleware
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as error:  # pragma: no cover - exercised by a test that hides the extra
    raise _missing_extra(__name__, "fastapi", error) from error

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from agent_trace import _api, _runtime
from agent_trace import _attributes as A
from agent_trace._config import ConfigurationError
from agent_trace._log import internal_error, warn_once
from agent_trace.integrations import CONSTITUTIONAL_HASH_HEADER
from agent_trace.integrations._meters import PipelineMeterProvider
from agent_trace.model.compliance import ConstitutionalViolationError, PolicyCheck

__all__ = ["HashMode", "instrument"]

_log = logging.getLogger(__name__)

HashMode = Literal["off", "observe", "enforce"]
_MODES = ("off", "observe", "enforce")

ServerRequestHook = Callable[[trace.Span, dict[str, Any]], None]

_HEADER_KEY = CONSTITUTIONAL_HASH_HEADER.lower().encode("latin-1")
_ECHO_LIMIT = 64
_POLICY = "constitutional_hash"
_HEADER_RESULT = "agent_trace.constitution.header"
_INSTRUMENTED = "_agent_trace_instrumented"
_REPORTED = "_agent_trace_reported"

# The server span of the request being handled, for background tasks to link to. Set by the
# guard inside the server span; Starlette runs a response's background tasks in that context.
_request_span: ContextVar[SpanContext | None] = ContextVar("agent_trace_request_span", default=None)


def instrument(
    app: fastapi.FastAPI,
    *,
    excluded_urls: str | Sequence[str] | None = None,
    constitutional_hash_mode: HashMode = "off",
    constitutional_hash: str | None = None,
    health_path: str | None = "/health",
    server_request_hook: ServerRequestHook | None = None,
    flush_on_shutdown: bool = True,
) -> fastapi.FastAPI:
    """Trace a FastAPI app with agent-trace's pipeline; calling it again changes nothing.

    Call it once the app exists (before or after `agent_trace.configure()`, before or after
    routes are added). The health route is neither traced nor checked for the constitutional
    hash; neither are requests whose whole path an excluded URL matches.

    Args:
        app: the application; returned, instrumented.
        excluded_urls: regular expressions, as a list or comma-separated; default
            `OTEL_PYTHON_FASTAPI_EXCLUDED_URLS` (or `OTEL_PYTHON_EXCLUDED_URLS`), read now.
            A request is not traced when one is found anywhere in its full URL (OpenTelemetry's
            rule); its hash is not checked only when one matches its whole path (`/metrics`
            exempts `/metrics`, not `/proposals/metrics`; the Host header and query never
            count).
        constitutional_hash_mode: `off`; `observe` records a request whose
            `Constitutional-Hash` header is missing or different as a violation; `enforce`
            also refuses it, 428 when missing and 409 when different.
        constitutional_hash: the hash to require; default the configured one
            (`CONSTITUTIONAL_HASH`), read on each request.
        health_path: where to answer health checks (GET/HEAD); None for no health route.
        server_request_hook: called with the server span and the ASGI scope of each request.
        flush_on_shutdown: deliver queued spans when the app's lifespan ends.

    Raises:
        ConfigurationError: for an unknown mode, an excluded URL that is not a regular
            expression, or observe/enforce with no hash given nor configured.

    Example:
        >>> app = instrument(FastAPI(), constitutional_hash_mode="observe",
        ...                  excluded_urls=["/metrics$"])
    """
    if getattr(app, _INSTRUMENTED, False):
        _log.debug("agent-trace: FastAPI app %r is already instrumented", app.title)
        return app

    options = _Options.build(
        constitutional_hash_mode, constitutional_hash, health_path, _excluded(excluded_urls)
    )

    # Our guard goes inside the instrumentation's server span: wrap the stack builder before the
    # instrumentation wraps it in turn (it keeps the builder it finds and nests its span around
    # the stack that builder returns).
    _wrap_stack_builder(app, lambda stack: _with_guard(stack, options))
    FastAPIInstrumentor.instrument_app(
        app,
        server_request_hook=_server_hook(server_request_hook),
        excluded_urls=options.excluded_raw,
        exclude_spans=["receive", "send"],
        # Not the global providers: those are the host program's. A tracer provider the host
        # installed first would take the server spans away from agent-trace's sinks (and
        # agent-trace's spans inside a request would point at a parent it never exports); an
        # unset meter provider loses the measurements, one set later takes them among the
        # host's own metrics.
        tracer_provider=_runtime.tracer_provider(),
        meter_provider=PipelineMeterProvider(),
    )
    if options.health_path is not None:
        # The health route sits outside everything, so it makes no span and passes no check.
        _wrap_stack_builder(app, lambda stack: _HealthRoute(stack, options))
    _link_background_tasks()
    if flush_on_shutdown:
        _flush_at_lifespan_end(app)

    # A stack built by an earlier request is rebuilt, with the layers above, on the next one.
    app.middleware_stack = None
    setattr(app, _INSTRUMENTED, True)
    return app


# -- options --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    mode: str
    explicit_hash: str | None
    health_path: str | None
    excluded_raw: str
    # Each excluded pattern on its own, matched against the whole path: the hash check is
    # skipped only there (the instrumentation's own list, searched anywhere in the URL, decides
    # only what is traced).
    exempt_paths: tuple[re.Pattern[str], ...]

    @classmethod
    def build(
        cls, mode: str, explicit_hash: str | None, health_path: str | None, excluded_raw: str
    ) -> _Options:
        if mode not in _MODES:
            raise ConfigurationError(
                f"constitutional_hash_mode={mode!r} is not a mode; use one of {', '.join(_MODES)}"
            )
        if explicit_hash is not None:
            explicit_hash = explicit_hash.strip().lower()
            if not re.fullmatch(r"[0-9a-f]{8,64}", explicit_hash):
                raise ConfigurationError(
                    f"constitutional_hash={explicit_hash!r} is not a hex digest; use the first "
                    "16 hex digits of the SHA-256 of the constitution file"
                )
        settings = _api.settings()
        if (
            mode != "off"
            and explicit_hash is None
            and settings is not None
            and settings.constitution_hash is None
        ):
            raise ConfigurationError(
                f"constitutional_hash_mode={mode!r} needs a hash, and none is configured; set "
                "CONSTITUTIONAL_HASH, configure(constitution_hash=...) or pass "
                "constitutional_hash="
            )
        if health_path is not None and not health_path.startswith("/"):
            raise ConfigurationError(
                f"health_path={health_path!r} is not a path; use one starting with '/', or None"
            )
        try:
            # Compiled here only to refuse a bad pattern now, not on the first request.
            parse_excluded_urls(excluded_raw)
            exempt_paths = tuple(re.compile(item) for item in excluded_raw.split(",") if item)
        except re.error as exc:
            raise ConfigurationError(
                f"excluded_urls={excluded_raw!r} is not a list of regular expressions ({exc}); "
                "separate them with commas and escape special characters"
            ) from None
        return cls(mode, explicit_hash, health_path, excluded_raw, exempt_paths)

    def expected_hash(self) -> str | None:
        if self.explicit_hash is not None:
            return self.explicit_hash
        settings = _api.settings()
        return None if settings is None else settings.constitution_hash

    def is_exempt(self, scope: Scope) -> bool:
        """Whether the request's path is one the hash check skips: a pattern matching all of it.

        The path only: the instrumentation's URL starts with the client's Host header, and the
        query is the client's too, so a pattern found there would let any client switch the
        check off. The whole path, not a search inside it: a pattern found in a path parameter
        (`/proposals/metrics` for `/metrics`) or a prefix of every path (`/`) would do the same.
        """
        path: str = scope.get("path") or "/"
        return any(pattern.fullmatch(path) for pattern in self.exempt_paths)


def _excluded(excluded_urls: str | Sequence[str] | None) -> str:
    """The excluded URLs as the instrumentation's comma-separated string, empty items dropped.

    An empty item would become an empty alternative in the regular expression, which matches
    every URL (a trailing comma in the variable would switch tracing off).
    """
    if excluded_urls is None:
        excluded_urls = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get(
            "OTEL_PYTHON_EXCLUDED_URLS", ""
        )
    items = excluded_urls.split(",") if isinstance(excluded_urls, str) else list(excluded_urls)
    return ",".join(item.strip() for item in items if item.strip())


# -- building the stack ---------------------------------------------------------------------------


def _wrap_stack_builder(app: fastapi.FastAPI, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return wrap(build())

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _with_guard(stack: ASGIApp, options: _Options) -> ASGIApp:
    """Put the guard just inside Starlette's outermost error middleware."""
    if isinstance(stack, ServerErrorMiddleware):
        stack.app = _RequestGuard(stack.app, options)
        return stack
    # Another wrapper got there first; the guard then runs outside the server span.
    warn_once(
        _log,
        "fastapi-stack",
        "agent-trace: unexpected FastAPI middleware stack (%s); header checks and error "
        "reports run outside the server span",
        type(stack).__name__,
    )
    return _RequestGuard(stack, options)


def _server_hook(user_hook: ServerRequestHook | None) -> ServerRequestHook:
    def hook(span: trace.Span, scope: dict[str, Any]) -> None:
        if span.is_recording():
            pipeline = _runtime.current()
            constitution = pipeline.constitution_hash if pipeline is not None else None
            span.set_attribute(A.CONSTITUTION_HASH, constitution or A.UNSET_HASH)
            span.set_attribute(A.SENTRY_OP, "http.server")
        if user_hook is not None:
            user_hook(span, scope)

    return hook


# -- inside the server span -----------------------------------------------------------------------


class _RequestGuard:
    """Checks the constitutional hash and reports unhandled errors, inside the server span."""

    def __init__(self, app: ASGIApp, options: _Options) -> None:
        self.app = app
        self._options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        span = trace.get_current_span()
        if self._options.mode != "off" and not self._options.is_exempt(scope):
            try:
                refusal = self._check(scope, span)
            except Exception:
                internal_error(_log, "checking the constitutional hash header")
                refusal = None
            if refusal is not None:
                await _send_json(send, *refusal)
                return

        token = _request_span.set(span.get_span_context() if span.is_recording() else None)
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            _report_unhandled(exc, span)
            raise
        finally:
            _request_span.reset(token)

    def _check(self, scope: Scope, span: trace.Span) -> tuple[int, dict[str, Any]] | None:
        """Judge the request's hash; the refusal to send, or None to let it through."""
        values = [value for key, value in scope.get("headers") or () if key == _HEADER_KEY]
        expected = self._options.expected_hash()
        if expected is None:
            warn_once(
                _log,
                "fastapi-no-hash",
                "agent-trace: constitutional_hash_mode=%r but no hash is configured",
                self._options.mode,
            )
            if self._options.mode == "enforce":
                # Refusing everything is the safe side of not knowing what to require.
                return 503, {
                    "error": "constitutional_hash_not_configured",
                    "message": "this service enforces a constitutional hash but has none "
                    "configured; set CONSTITUTIONAL_HASH",
                }
            return None

        if not values:
            result = "missing"
        elif len(values) == 1 and values[0].strip().lower() == expected.encode("ascii"):
            result = "match"
        else:
            result = "mismatch"
        if span.is_recording():
            span.set_attribute(_HEADER_RESULT, result)
        if result == "match":
            _count_compliant(span)
            return None

        enforce = self._options.mode == "enforce"
        try:
            with PolicyCheck(None, _POLICY) as check:
                check.violation(
                    f"constitutional_hash_{result}",
                    severity="high" if result == "mismatch" else "medium",
                    enforcement="block" if enforce else "observe",
                )
        except Exception:
            internal_error(_log, "recording a constitutional hash violation")
        if not enforce:
            return None
        return self._refusal(result, values, len(expected))

    def _refusal(
        self, result: str, values: Sequence[bytes], digits: int
    ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "error": f"constitutional_hash_{result}",
            "message": (
                f"this service only accepts requests that carry the {CONSTITUTIONAL_HASH_HEADER} "
                "header with the hash of the constitution it enforces"
                if result == "missing"
                else f"the {CONSTITUTIONAL_HASH_HEADER} header does not name the constitution "
                "this service enforces"
            ),
            "expected_form": f"{CONSTITUTIONAL_HASH_HEADER}: <{digits} lowercase hex digits>, "
            "sent once",
        }
        if self._options.health_path is not None:
            body["hint"] = f"GET {self._options.health_path} answers with the hash"
        if result == "missing":
            return 428, body
        body["received"] = _preview(values[0])
        body["received_length"] = len(values[0])
        if len(values) > 1:
            body["received_count"] = len(values)
        return 409, body


def _count_compliant(span: trace.Span) -> None:
    """Count a passed header check in the metric and the alert's compliance rate.

    A passed check gets no span of its own (one per request would be noise). It is counted
    whether or not the server span is recording, as a violation is: counting passes only in
    sampled requests would pull the rate down under sampling and raise the alert falsely.
    """
    pipeline = _runtime.current()
    if pipeline is None:
        return

    pipeline.metrics.compliance_checks.add(1, {"policy": _POLICY, "result": "compliant"})
    if pipeline.alerts is not None:
        ids = span.get_span_context()
        where = (
            {"trace_id": f"{ids.trace_id:032x}", "span_id": f"{ids.span_id:016x}"}
            if ids.is_valid
            else None
        )
        pipeline.alerts.compliance(True, where)


def _preview(raw: bytes) -> str:
    """At most the first 64 characters sent, anything but printable ASCII shown as U+FFFD."""
    text = raw[:_ECHO_LIMIT].decode("latin-1")
    return "".join(c if " " <= c <= "~" else "\ufffd" for c in text)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body, ensure_ascii=True).encode("ascii")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _report_unhandled(exc: BaseException, span: trace.Span) -> None:
    """Send one Sentry error event for an exception about to become a 500, linked to `span`.

    The instrumentation records the exception on the server span itself. A violation that a
    model scope has already recorded has been reported by it; a background task's exception by
    the task's span.
    """
    if span.is_recording():
        span.set_attribute(A.ERROR_TYPE, _error_type(exc))
    if getattr(exc, _REPORTED, False):
        return
    if isinstance(exc, ConstitutionalViolationError) and getattr(
        exc, "_agent_trace_recorded", False
    ):
        return
    _capture(exc, span)


def _capture(exc: BaseException, span: trace.Span) -> None:
    pipeline = _runtime.current()
    if pipeline is None or pipeline.sentry is None:
        return
    tags = {"constitutional_hash": pipeline.constitution_hash or A.UNSET_HASH}
    fingerprint = None
    if isinstance(exc, ConstitutionalViolationError):
        # Grouped like the violations the model reports, one issue per violation type.
        tags.update(violation_type=exc.violation_type, severity=exc.severity)
        fingerprint = ["agent_trace.constitutional_violation", exc.violation_type]
    try:
        pipeline.sentry.capture_exception(exc, span, tags, fingerprint=fingerprint)
    except Exception:
        internal_error(_log, "reporting a request error to Sentry")
    with contextlib.suppress(Exception):
        setattr(exc, _REPORTED, True)


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ConstitutionalViolationError):
        return exc.error_type
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


# -- background tasks -----------------------------------------------------------------------------


def _link_background_tasks() -> None:
    """Run each background task of an instrumented request in a span linked to the request.

    Starlette runs background tasks after the response's last chunk, inside the request's
    handling. The request's span has ended by then, so the task's span starts a trace of its own
    with a link to the request instead of hanging off an ended parent (which would keep it out of
    the request's Sentry transaction anyway). Tasks of other apps keep whatever ran before.
    """
    previous = BackgroundTask.__call__
    if getattr(previous, "_agent_trace", False):
        return
    # The instrumentation's own wrapper would add a second span under ours: call what it wraps.
    original = getattr(BackgroundTask, "_otel_original_call", previous)

    async def __call__(self: BackgroundTask) -> None:
        request = _request_span.get()
        if request is None:
            await previous(self)
            return
        await _run_linked(self, original, request)

    __call__._agent_trace = True  # type: ignore[attr-defined]
    BackgroundTask.__call__ = __call__  # type: ignore[method-assign]


async def _run_linked(
    task: BackgroundTask,
    run: Callable[[BackgroundTask], Awaitable[None]],
    request: SpanContext,
) -> None:
    pipeline = _runtime.current()
    if pipeline is None:
        await run(task)
        return

    name = getattr(task.func, "__name__", type(task.func).__name__)
    span = pipeline.tracer.start_span(
        f"background_task {name}",
        # A root of its own, in a context that still carries the request's baggage.
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        kind=SpanKind.INTERNAL,
        links=[Link(request, {"agent_trace.link.type": "request"})],
        attributes={
            A.CONSTITUTION_HASH: pipeline.constitution_hash or A.UNSET_HASH,
            A.SENTRY_OP: "queue.task",
            "code.function.name": name,
        },
        record_exception=False,
        set_status_on_exception=False,
    )
    token = _request_span.set(None)
    try:
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                await run(task)
            except Exception as exc:
                if span.is_recording():
                    span.record_exception(exc, escaped=True)
                    span.set_attribute(A.ERROR_TYPE, _error_type(exc))
                    message = type(exc).__name__
                    if pipeline.capture_content:
                        message = f"{message}: {exc}"
                    span.set_status(Status(StatusCode.ERROR, message))
                _capture(exc, span)
                raise
            except asyncio.CancelledError:
                if span.is_recording():
                    span.set_attribute(A.CANCELLED, True)
                raise
    finally:
        _request_span.reset(token)


# -- outside the server span ----------------------------------------------------------------------


class _HealthRoute:
    """Answers the health path before any tracing or checking happens."""

    def __init__(self, app: ASGIApp, options: _Options) -> None:
        # `app` is kept under this name so FastAPI's own telemetry can see, by walking `.app`,
        # that the OpenTelemetry middleware is in the stack and stay out of the way.
        self.app = app
        self._options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != self._options.health_path:
            await self.app(scope, receive, send)
            return

        if scope.get("method") not in ("GET", "HEAD"):
            await _send_json(send, 405, {"error": "method_not_allowed", "allow": "GET, HEAD"})
            return
        await _send_json(send, 200, _health(self._options.mode, self._options.expected_hash()))


def _health(mode: str, constitutional_hash: str | None) -> dict[str, Any]:
    """What the health route answers: service, constitutional hash, and each sink's state."""
    settings = _api.settings()
    sinks = _api.sink_status()
    if settings is None:
        status = "unconfigured"
    elif all(state == "ok" for state in sinks.values()):
        status = "ok"
    else:
        status = "degraded"
    return {
        "status": status,
        "service": None if settings is None else settings.service_name,
        "constitutional_hash": constitutional_hash
        or (None if settings is None else settings.constitution_hash),
        "constitutional_hash_mode": mode,
        "sinks": sinks,
    }


def _flush_at_lifespan_end(app: fastapi.FastAPI) -> None:
    """Flush when the app's lifespan ends: uvicorn re-raises SIGTERM and skips `atexit`."""
    router = app.router
    lifespan = router.lifespan_context

    @contextlib.asynccontextmanager
    async def flushing_lifespan(app_: Any) -> AsyncIterator[Any]:
        try:
            async with lifespan(app_) as state:
                yield state
        finally:
            timeout_s = _flush_timeout_s()
            await asyncio.to_thread(_api.force_flush, timeout_s)

    router.lifespan_context = flushing_lifespan


def _flush_timeout_s() -> float:
    settings = _api.settings()
    return 5.0 if settings is None else settings.exit_timeout_s

"""Constitutional checks, violations, and `@track_constitutional_compliance`.

A check ends with one result: `agent_trace.compliance.result` on its span, and the `result`
label of the `agent_trace.compliance.checks` metric.

- `compliant`: it passed (`passed()`, a `policy_check` block that ends without a verdict, or a
  decorated check that returned True, or returned None: the style of check that raises
  `ConstitutionalViolationError` on a violation and returns nothing otherwise).
- `violation`: it found a violation (`violation(...)`, a decorated check that returned False,
  or a `ConstitutionalViolationError` raised through it).
- `error`: it gave no verdict. Either an exception escaped it, or a decorated check returned
  something that is not a verdict: only a bool is one (as the return value, or as the
  `compliant` field), so `"false"`, `0` and `{"compliant": "no"}` are not read as either
  answer. The span is ERROR, with `error.type` the exception's type or
  `unreadable_verdict`. An error is never counted as compliant: it lowers the compliance rate
  as a violation does, in the built-in alert policy and in the Prometheus rule alike.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast, overload

from opentelemetry.trace import Status, StatusCode

from agent_trace import _attributes as A
from agent_trace._log import internal_error, warn_once
from agent_trace.model._scope import Scope, active_session

__all__ = [
    "ConstitutionalViolationError",
    "PolicyCheck",
    "policy_check",
    "report_violation",
    "track_constitutional_compliance",
]

_log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class ConstitutionalViolationError(Exception):
    """An action broke a constitutional principle.

    Constructing it has no side effects. Raised through traced code, it is recorded on the
    span where it was raised (exception, `error.type=constitutional_violation`, the violation
    attributes), marks every span it escapes as ERROR, and sends one Sentry error event linked
    to that span with the tags `constitutional_hash`, `violation_type` and `severity`.

    Example:
        >>> raise ConstitutionalViolationError("shares health data", "privacy", severity="high")
    """

    error_type = "constitutional_violation"

    def __init__(
        self,
        message: str,
        violation_type: str,
        severity: str = "high",
        *,
        policy: str | None = None,
        principle: str | int | None = None,
        enforcement: str = "block",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violation_type = violation_type
        self.severity = severity
        self.policy = policy
        self.principle = principle
        self.enforcement = enforcement

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                self.message,
                self.violation_type,
                self.severity,
                self.policy,
                self.principle,
                self.enforcement,
            ),
        )


def _rebuild(*args: Any) -> ConstitutionalViolationError:
    message, vtype, severity, policy, principle, enforcement = args
    return ConstitutionalViolationError(
        message, vtype, severity, policy=policy, principle=principle, enforcement=enforcement
    )


def _violation_attributes(
    vtype: str, severity: str, enforcement: str | None, principle: Any
) -> dict[str, Any]:
    p = A.COMPLIANCE
    return A.to_attributes(
        {
            p + "result": "violation",
            p + "violation.type": vtype,
            p + "severity": severity,
            p + "enforcement": enforcement,
            p + "principle": principle,
        }
    )


def report_violation(exc: ConstitutionalViolationError, scope: Scope) -> None:
    """Called once, by the innermost traced scope a violation is raised through."""
    pipeline = scope._pipeline
    if pipeline is None:
        return
    scope._span.set_attributes(
        _violation_attributes(exc.violation_type, exc.severity, exc.enforcement, exc.principle)
    )
    pipeline.metrics.violations.add(
        1, {"violation_type": exc.violation_type, "severity": exc.severity}
    )
    if pipeline.alerts is not None:
        pipeline.alerts.compliance(False, _trace_of(scope))
    if pipeline.sentry is not None:
        tags = {
            "constitutional_hash": pipeline.constitution_hash or A.UNSET_HASH,
            "violation_type": exc.violation_type,
            "severity": exc.severity,
        }
        try:
            pipeline.sentry.capture_exception(
                exc,
                scope._span,
                tags,
                fingerprint=["agent_trace.constitutional_violation", exc.violation_type],
            )
        except Exception:
            internal_error(_log, "reporting a violation to Sentry")


def _trace_of(scope: Scope) -> dict[str, str]:
    return {"trace_id": scope.trace_id, "span_id": scope.span_id}


class PolicyCheck(Scope):
    """A constitutional check: span `policy_check {policy}`.

    Finding a violation is a successful check: call `violation(...)` and the span records
    `agent_trace.compliance.result=violation` with status unset. Only a check that gives no
    verdict makes the span ERROR: an exception escaping the block, or a decorated check whose
    returned verdict cannot be read (see the module's docstring).
    """

    _op = "agent_trace.compliance.check"

    def __init__(self, session: Any, policy: str, **attrs: Any) -> None:
        self.policy = A.name_text(policy)
        self.result: str | None = None
        converted = A.to_attributes({A.COMPLIANCE + "policy": policy, **attrs})
        super().__init__(session, f"policy_check {self.policy}", converted)

    def passed(self) -> None:
        """The action complies with the policy."""
        self.result = "compliant"
        self.set_attribute(A.COMPLIANCE + "result", "compliant")

    def violation(
        self,
        violation_type: str,
        severity: str = "high",
        *,
        enforcement: str = "block",
        principle: str | int | None = None,
    ) -> None:
        """The action violates the policy: recorded as data, and counted."""
        self.result = "violation"
        self.set_attributes(_violation_attributes(violation_type, severity, enforcement, principle))
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.metrics.violations.add(
                1, {"violation_type": violation_type, "severity": severity}
            )
            if pipeline.alerts is not None:
                pipeline.alerts.violation(violation_type, severity, _trace_of(self))

    def _unreadable_verdict(self, got: str) -> None:
        """A decorated check returned no verdict: an error, never a pass."""
        # Set first: whatever fails below, _on_exit must not take the check for passed.
        self.result = "error"
        warn_once(
            _log,
            "compliance.unreadable_verdict:" + self.policy,
            "agent-trace: policy check %s returned %s, not a bool verdict; it is recorded as "
            "result=error (never compliant). Fix: return True/False, or a dict/object whose "
            "`compliant` is True/False",
            self.policy,
            got,
        )
        if not self._span.is_recording():
            return
        self._span.set_attributes(
            {A.COMPLIANCE + "result": "error", A.ERROR_TYPE: "unreadable_verdict"}
        )
        self._span.set_status(Status(StatusCode.ERROR, f"unreadable compliance verdict: {got}"))

    def _on_exit(self, exc: BaseException | None, duration_s: float, recording: bool) -> None:
        if self.result is None:
            if isinstance(exc, ConstitutionalViolationError):
                self.result = "violation"
            elif exc is not None:
                self.result = "error"
                self.set_attribute(A.COMPLIANCE + "result", "error")
            else:
                self.passed()
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.metrics.compliance_checks.add(
                1, {"policy": self.policy, "result": self.result}
            )
            alerts = pipeline.alerts
            if alerts is None:
                return
            if self.result == "compliant":
                alerts.compliance(True, _trace_of(self))
            elif self.result == "error":
                # No verdict is no evidence of compliance: counted against the rate, as the
                # Prometheus rule counts it (compliant checks over all checks).
                alerts.compliance(False, _trace_of(self))
            elif self.result == "violation" and exc is None:
                # A raised violation already fed the alert policy in report_violation.
                alerts.compliance(False, _trace_of(self))


def policy_check(policy: str, **attrs: Any) -> PolicyCheck:
    """A constitutional check in the current session, parented to the current span."""
    return PolicyCheck(active_session(), policy, **attrs)


def _as_verdict(value: Any) -> bool | None:
    """`value` as a verdict, or None: only a bool answers ("false", 0 or "no" are no answer)."""
    # Guessing at text or numbers would turn a typo into a pass; the caller logs the fix.
    return value if isinstance(value, bool) else None


def _kind(value: Any) -> str:
    """What a value is, for a message that must not show its content."""
    return "None" if value is None else f"a {type(value).__name__}"


def _apply_result(check: PolicyCheck, result: Any) -> None:
    """Read the check's verdict from the return value, as documented on the decorator."""
    compliant = _as_verdict(result)
    if compliant is True or result is None:
        # None: a check that raises on a violation returned normally, so it found none.
        check.passed()
        return
    if compliant is False:
        check.violation("unspecified")
        return

    getter: Callable[[str], Any]
    if isinstance(result, Mapping):
        getter = result.get
    else:

        def getter(name: str) -> Any:
            return getattr(result, name, None)

    field = getter("compliant")
    if field is None:
        field = getter("is_compliant")
    compliant = _as_verdict(field)
    if compliant is None:
        got = _kind(result)
        if field is not None:
            got += f" whose `compliant` is {_kind(field)}"
        check._unreadable_verdict(got)
    elif compliant:
        check.passed()
    else:
        check.violation(
            A.name_text(getter("violation_type") or "unspecified"),
            A.name_text(getter("severity") or "high"),
            enforcement=A.name_text(getter("enforcement") or "block"),
        )


@overload
def track_constitutional_compliance(fn: F) -> F: ...


@overload
def track_constitutional_compliance(*, policy: str | None = None) -> Callable[[F], F]: ...


def track_constitutional_compliance(
    fn: F | None = None, *, policy: str | None = None
) -> F | Callable[[F], F]:
    """Trace a compliance check function as a `policy_check {policy}` span.

    Usable bare or with `policy=` (default: the function's name). The verdict is read from the
    return value: a bool, or a dict/object with `compliant` (or `is_compliant`) and optionally
    `violation_type`, `severity`, `enforcement`. A raised `ConstitutionalViolationError`
    records the violation and propagates. Any other return value (`"false"`, `0`, None, a
    `compliant` that is not a bool) is no verdict: the check is recorded as
    `result=error`, never as compliant. The return value and exceptions are unchanged.

    Example:
        >>> @agent_trace.track_constitutional_compliance(policy="privacy")
        ... def check_privacy(proposal):
        ...     return {"compliant": False, "violation_type": "pii", "severity": "high"}
    """

    def decorate(func: F) -> F:
        # A functools.partial or a callable object has no __name__: name it by its type.
        name = policy or getattr(func, "__name__", None) or type(func).__name__

        def verdict(check: PolicyCheck, result: Any) -> None:
            try:
                _apply_result(check, result)
            except Exception:
                internal_error(_log, "reading a compliance result")
            if check.result is None:
                # Reading the verdict raised (a property of the result, say): no pass either.
                try:
                    check._unreadable_verdict("a value whose verdict raised when read")
                except Exception:
                    check.result = "error"
                    internal_error(_log, "recording an unreadable compliance result")

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with PolicyCheck(active_session(), name) as check:
                    result = await func(*args, **kwargs)
                    verdict(check, result)
                    return result

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with PolicyCheck(active_session(), name) as check:
                result = func(*args, **kwargs)
                verdict(check, result)
                return result

        return cast(F, wrapper)

    if fn is not None:
        return decorate(fn)
    return decorate

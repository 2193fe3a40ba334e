"""Library logging: one logger per module, and warnings that repeat at most once a minute."""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["internal_error", "warn_once"]

_INTERVAL_S = 60.0
_last_warned: dict[str, float] = {}
_lock = threading.Lock()


def warn_once(logger: logging.Logger, key: str, msg: str, *args: object) -> bool:
    """Log `msg` at WARNING unless the same `key` was logged in the last minute.

    Export failures and bad attribute values can happen per span; a host program's log must
    not fill up with copies of the same line.
    """
    now = time.monotonic()
    with _lock:
        last = _last_warned.get(key)
        if last is not None and now - last < _INTERVAL_S:
            return False
        _last_warned[key] = now
    logger.warning(msg, *args)
    return True


def internal_error(logger: logging.Logger, where: str) -> None:
    """Record a failure inside agent-trace itself; the traced program carries on untouched."""
    now = time.monotonic()
    key = "internal:" + where
    with _lock:
        last = _last_warned.get(key)
        if last is not None and now - last < _INTERVAL_S:
            return
        _last_warned[key] = now
    logger.warning(
        "agent-trace: internal error in %s; tracing skipped this step", where, exc_info=True
    )


class _RepeatFilter(logging.Filter):
    """Lets each message template of a logger through at most once a minute."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        key = f"sdk:{record.name}:{record.msg}"
        now = time.monotonic()
        with _lock:
            last = _last_warned.get(key)
            if last is not None and now - last < _INTERVAL_S:
                return False
            _last_warned[key] = now
        return True


# The SDK warns once per attribute it drops or cannot convert: a 300-agent round would print
# hundreds of identical lines into the host program's log.
_SDK_LOGGERS = ("opentelemetry.attributes", "opentelemetry.sdk.trace")
_repeat_filter = _RepeatFilter()


def rate_limit_sdk_warnings() -> None:
    """Limit the SDK's per-attribute warnings to one per message a minute (idempotent)."""
    for name in _SDK_LOGGERS:
        logger = logging.getLogger(name)
        if _repeat_filter not in logger.filters:
            logger.addFilter(_repeat_filter)


def _reset_for_tests() -> None:
    with _lock:
        _last_warned.clear()

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


def _reset_for_tests() -> None:
    with _lock:
        _last_warned.clear()

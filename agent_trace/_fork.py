"""Objects that must start afresh in a forked child (threads, locks, connections, processes)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["reset_in_forked_child"]

T = TypeVar("T")


def reset_in_forked_child(owner: T, reset: Callable[[T], None]) -> None:
    """Call `reset(owner)` in every forked child, for as long as `owner` lives (it is held
    weakly: registering does not keep it alive)."""
    ref = weakref.ref(owner)

    def after_fork_in_child() -> None:
        alive = ref()
        if alive is not None:
            reset(alive)

    os.register_at_fork(after_in_child=after_fork_in_child)

"""Running the governance example inside a long test session."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from examples.governance_review import Summary, run


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while the example runs.

    Late in the suite the test process holds a large heap, and one full collection of it takes
    hundreds of milliseconds (615 ms measured with 3 million small objects): longer than the
    example's 150 ms turn timeout, so a reviewer would time out that never does on its own
    (a fresh-clone CI run saw 4 failed sessions for the seed's 3). The example itself then
    runs as it does in its own process.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run_board(**options: Any) -> Summary:
    """The example's `run(**options)` in a loop of its own, the collector paused."""
    with paused_gc():
        return asyncio.run(run(**options))

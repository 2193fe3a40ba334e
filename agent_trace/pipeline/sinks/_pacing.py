"""Export threads hand the GIL back to the application every fraction of a millisecond.

Encoding a batch (protobuf, JSON, Sentry transactions) is pure Python under the GIL. CPython
takes the GIL from a running thread only after the switch interval (5 ms), so an event loop
whose request arrives during a 10 ms encode waits up to 5 ms for it: the whole of a service's
p99. Releasing the GIL with a sleep of a microsecond every `SLICE_S` of work lets a waiting
thread in at once; the export itself takes a little longer and costs no more CPU. The host's
switch interval is left alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TypeVar, overload

__all__ = ["SLICE_S", "PacedBatch", "Pacer"]

# Work done before an export thread lets others run: well under a request's own duration.
SLICE_S = 0.0002
# Any sleep releases the GIL and blocks this thread in the kernel, so that a thread waiting
# for the GIL takes it (a zero sleep often gets it straight back). Linux rounds it up to its
# timer slack, about 50 us.
_PAUSE_S = 1e-6

T = TypeVar("T")


class Pacer:
    """Call `tick()` between small units of work; it sleeps once `SLICE_S` has passed."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = time.perf_counter() + SLICE_S

    def tick(self) -> None:
        now = time.perf_counter()
        if now >= self._next:
            time.sleep(_PAUSE_S)
            self._next = time.perf_counter() + SLICE_S


class PacedBatch(Sequence[T]):
    """A batch whose iteration paces itself, for exporters that walk the batch as they encode.

    The OpenTelemetry OTLP exporters build each span's message as they iterate over the batch,
    so pacing the iteration paces the encoding without touching their code.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[T]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        pacer = Pacer()
        for item in self._items:
            pacer.tick()
            yield item

"""The simulated human review queue: escalated proposals wait here for one person.

A session that escalates puts the proposal on an `asyncio.Queue` and waits for the answer;
one reviewer coroutine takes the proposals in order and decides each by a fixed rule. With a
single reviewer, escalations queue behind each other, which is why an escalated session is the
one most likely to miss its time budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from .proposals import Proposal

__all__ = ["REVIEW_S", "HumanReviewQueue", "human_decision"]

REVIEW_S = 0.01


def human_decision(proposal: Proposal) -> str:
    """The reviewer's rule: `approve` or `reject`.

    The person approves when somebody is accountable for the system (an owner), the risk is
    not critical, and the people affected by automated decisions are told about them;
    otherwise the person rejects. Approval by a person is itself the human oversight that
    principle 6 asks for.
    """
    informed = proposal.notifies_affected or proposal.affects_people == 0
    if proposal.owner is not None and proposal.risk_level != "critical" and informed:
        return "approve"
    return "reject"


class HumanReviewQueue:
    """Proposals waiting for a person; `submit` waits until the reviewer has decided."""

    def __init__(self, review_s: float = REVIEW_S) -> None:
        self.review_s = review_s
        self.reviewed = 0
        self._queue: asyncio.Queue[tuple[Proposal, asyncio.Future[str]]] = asyncio.Queue()

    async def submit(self, proposal: Proposal) -> str:
        """Queue `proposal` and return the reviewer's decision, `approve` or `reject`."""
        decided: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await self._queue.put((proposal, decided))
        return await decided

    async def _work(self) -> None:
        while True:
            proposal, decided = await self._queue.get()
            await asyncio.sleep(self.review_s)
            if not decided.cancelled():
                decided.set_result(human_decision(proposal))
                self.reviewed += 1
            self._queue.task_done()

    @asynccontextmanager
    async def reviewer(self) -> AsyncIterator[HumanReviewQueue]:
        """Keep the reviewer at work for the duration of the block."""
        worker = asyncio.create_task(self._work(), name="human-reviewer")
        try:
            yield self
        finally:
            worker.cancel()
            with suppress(asyncio.CancelledError):
                await worker

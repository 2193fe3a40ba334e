"""One agent service: ethics, legal or operations, chosen by the `AGENT_NAME` variable.

Run by `examples.distributed.services` as `uvicorn examples.distributed.agent:app`. Tracing is
configured from the environment (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
`SENTRY_DSN`, `CONSTITUTIONAL_HASH`), and requests must carry the constitutional hash.

`POST /review` takes a proposal and answers the agent's vote. The agent's checks are
`policy_check` spans under the request's server span, itself a child of the coordinator's turn.
The operations agent also reserves capacity in a background task, which gets a span of its own
linked to the request.
"""

from __future__ import annotations

import asyncio
import os

from fastapi import BackgroundTasks, FastAPI
from pydantic import BaseModel

import agent_trace
from agent_trace.integrations.fastapi import instrument

AGENT = os.environ.get("AGENT_NAME", "ethics")

# Words that, in this toy board, make a proposal harmful.
_HARMFUL = ("surveil", "manipulat", "deceiv", "covert")


class Proposal(BaseModel):
    """What the coordinator asks every agent to review."""

    session_id: str
    title: str
    summary: str
    uses_personal_data: bool = False
    consent: bool = False
    cost: float = 0.0
    budget: float = 0.0


class Review(BaseModel):
    """An agent's answer: its vote, how sure it is, and what it found."""

    agent: str
    vote: str
    confidence: float
    rationale: str
    findings: list[str]


async def _ethics(proposal: Proposal, tasks: BackgroundTasks) -> Review:
    await asyncio.sleep(0.03)  # the model thinking
    with agent_trace.policy_check("harm_avoidance") as check:
        harmful = [word for word in _HARMFUL if word in proposal.summary.lower()]
        if harmful:
            check.violation("harm", severity="high", principle=1)
        else:
            check.passed()
    if harmful:
        return Review(
            agent=AGENT,
            vote="reject",
            confidence=0.9,
            rationale="the proposal harms the people it affects",
            findings=[f"harm:{word}" for word in harmful],
        )
    return Review(
        agent=AGENT, vote="approve", confidence=0.8, rationale="no harm found", findings=[]
    )


async def _legal(proposal: Proposal, tasks: BackgroundTasks) -> Review:
    await asyncio.sleep(0.04)
    with agent_trace.policy_check("privacy") as check:
        unlawful = proposal.uses_personal_data and not proposal.consent
        if unlawful:
            check.violation("personal_data_without_consent", severity="high", principle=2)
        else:
            check.passed()
    if unlawful:
        return Review(
            agent=AGENT,
            vote="reject",
            confidence=0.95,
            rationale="personal data without consent",
            findings=["privacy:no_consent"],
        )
    return Review(
        agent=AGENT, vote="approve", confidence=0.85, rationale="lawful basis present", findings=[]
    )


async def _reserve_capacity(session_id: str, cost: float) -> None:
    """Runs after the answer was sent: the request's span has ended, this one is linked to it."""
    await asyncio.sleep(0.05)


async def _operations(proposal: Proposal, tasks: BackgroundTasks) -> Review:
    await asyncio.sleep(0.02)
    with agent_trace.policy_check("resource_limits") as check:
        over = proposal.cost > proposal.budget
        if over:
            check.violation("over_budget", severity="medium", principle=3)
        else:
            check.passed()
    if over:
        return Review(
            agent=AGENT,
            vote="reject",
            confidence=0.7,
            rationale="costs exceed the budget",
            findings=[f"budget:{proposal.cost:.0f}>{proposal.budget:.0f}"],
        )
    tasks.add_task(_reserve_capacity, proposal.session_id, proposal.cost)
    return Review(
        agent=AGENT, vote="approve", confidence=0.75, rationale="within budget", findings=[]
    )


_REVIEWERS = {"ethics": _ethics, "legal": _legal, "operations": _operations}

agent_trace.configure()
app = FastAPI(title=f"{AGENT} agent")


@app.post("/review")
async def review(proposal: Proposal, tasks: BackgroundTasks) -> Review:
    """The agent's turn in a review session."""
    return await _REVIEWERS[AGENT](proposal, tasks)


instrument(app, constitutional_hash_mode="enforce")

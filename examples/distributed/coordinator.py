"""The coordinator: review sessions whose turns are HTTP calls to the agent services.

Each turn is a remote turn (a CLIENT span); the instrumented httpx client sends the trace and
the constitutional hash with the call, so the agent's server span is the turn's child. The
turns of a session run concurrently; the votes they bring back are tallied in a consensus
round.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

import agent_trace
from examples.distributed import AGENTS

__all__ = ["PROPOSALS", "SessionSummary", "call_with_outdated_hash", "review_proposal"]

PROPOSALS: tuple[dict[str, Any], ...] = (
    {
        "title": "Publish anonymised usage statistics",
        "summary": "Share monthly aggregate counts with the research partner.",
        "uses_personal_data": False,
        "cost": 1200.0,
        "budget": 5000.0,
    },
    {
        "title": "Personalised reminders",
        "summary": "Send reminders based on each member's visit history.",
        "uses_personal_data": True,
        "consent": False,
        "cost": 800.0,
        "budget": 1000.0,
    },
    {
        "title": "Engagement nudges",
        "summary": "Covert nudges that manipulate members into longer sessions.",
        "uses_personal_data": True,
        "consent": True,
        "cost": 9000.0,
        "budget": 2000.0,
    },
)


@dataclass(frozen=True)
class SessionSummary:
    """What one review session decided, and where to find its trace."""

    session_id: str
    trace_id: str
    title: str
    outcome: str
    agreement: float
    votes: Mapping[str, str]
    findings: tuple[str, ...]


async def _turn(
    session: agent_trace.Session,
    client: httpx.AsyncClient,
    agent: str,
    url: str,
    proposal: Mapping[str, Any],
) -> dict[str, Any]:
    address = httpx.URL(url)
    async with session.turn(agent, role="reviewer", remote=True) as turn:
        turn.set_attributes({"server.address": address.host, "server.port": address.port})
        response = await client.post(
            f"{url}/review", json={"session_id": session.session_id, **proposal}
        )
        response.raise_for_status()
        review: dict[str, Any] = response.json()
        return review


async def review_proposal(
    client: httpx.AsyncClient, agent_urls: Mapping[str, str], proposal: Mapping[str, Any]
) -> SessionSummary:
    """One review session: every agent's turn at once, then a weighted vote."""
    session_id = f"review-{uuid.uuid4().hex[:12]}"
    async with agent_trace.session(
        "ethical_review", session_id=session_id, agents=AGENTS, complexity=0.5
    ) as session:
        reviews = await asyncio.gather(
            *(_turn(session, client, agent, agent_urls[agent], proposal) for agent in AGENTS)
        )
        async with session.consensus_round(
            "weighted_vote", participants=AGENTS, threshold=0.66, round=1
        ) as rnd:
            for review in reviews:
                rnd.vote(
                    review["agent"],
                    review["vote"],
                    confidence=review["confidence"],
                    rationale=review["rationale"],
                )
            result = rnd.conclude()
        findings = tuple(finding for review in reviews for finding in review["findings"])
        if result.decision == "reject":
            outcome = "rejected"
        elif result.decision == "approve" and findings:
            # The constitution outranks the vote: a majority cannot approve a violation.
            outcome = "blocked"
        elif result.decision == "approve":
            outcome = "approved"
        else:
            outcome = "escalated"
            with session.escalate("no_consensus", severity="medium") as escalation:
                escalation.set_outcome("queued_for_human_review")
        session.set_outcome(outcome)

    return SessionSummary(
        session_id=session_id,
        trace_id=session.trace_id,
        title=str(proposal["title"]),
        outcome=outcome,
        agreement=result.agreement,
        votes={review["agent"]: review["vote"] for review in reviews},
        findings=findings,
    )


async def call_with_outdated_hash(url: str) -> httpx.Response:
    """A caller working under another constitution: the agent refuses it with 409."""
    async with httpx.AsyncClient(timeout=5.0) as plain:
        return await plain.post(
            f"{url}/review",
            json={"session_id": "outdated", **PROPOSALS[0]},
            headers={"Constitutional-Hash": "0000000000000000"},
        )

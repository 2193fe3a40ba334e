"""`python -m examples.distributed`: start the agents, run review sessions, stop the agents.

Options:
    --sessions N   how many review sessions to run (the sample proposals repeat); default 3.
    --json         print the summary as one JSON document instead of text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

import httpx

import agent_trace
from agent_trace.integrations.httpx import instrument_client
from examples.distributed import AGENTS, constitution_hash
from examples.distributed.coordinator import (
    PROPOSALS,
    SessionSummary,
    call_with_outdated_hash,
    review_proposal,
)
from examples.distributed.services import (
    AgentProcess,
    start_agents,
    stop_agents,
    wait_until_healthy,
)


async def _run_sessions(agents: list[AgentProcess], count: int) -> list[SessionSummary]:
    urls = {agent.agent: agent.url for agent in agents}
    # One client for every session: its keep-alive connections are shared, the traces are not.
    async with instrument_client(httpx.AsyncClient(timeout=10.0)) as client:
        return [
            await review_proposal(client, urls, PROPOSALS[index % len(PROPOSALS)])
            for index in range(count)
        ]


def _where_spans_went() -> str:
    settings = agent_trace.settings()
    if settings is None:
        return "nowhere (not configured)"
    places = []
    if settings.otlp_endpoint:
        places.append(f"OTLP {settings.otlp_endpoint}")
    if settings.sentry_dsn is not None:
        places.append(f"Sentry {settings.sentry_dsn.redacted}")
    if settings.local_path is not None:
        places.append(
            f"{settings.local_path} (draw a session: agent-trace show --file "
            f"{settings.local_path} TRACE_ID)"
        )
    return ", ".join(places)


def _exit(status: int | None) -> str:
    if status is not None and status < 0:
        # uvicorn ends by re-raising the signal it was stopped with, after a clean shutdown.
        return f"ended by {signal.Signals(-status).name}"
    return f"exit status {status}"


def _print_text(report: dict[str, Any]) -> None:
    print("agents:")
    for agent in report["agents"]:
        print(
            f"  {agent['service']:<17} pid {agent['pid']:<7} {agent['url']}  "
            f"hash {agent['constitutional_hash']}  sinks {agent['sinks']}"
        )
    print("sessions:")
    for session in report["sessions"]:
        votes = " ".join(f"{name}={vote}" for name, vote in session["votes"].items())
        findings = ", ".join(session["findings"]) or "none"
        print(
            f"  {session['title']!r}: {session['outcome']} "
            f"(agreement {session['agreement']:.2f}; {votes}; findings: {findings})\n"
            f"      session {session['session_id']}  trace {session['trace_id']}"
        )
    refusal = report["refusal"]
    print(
        f"outdated constitution: {refusal['agent']} answered {refusal['status']} "
        f"{refusal['body'].get('error')}"
    )
    stopped = ", ".join(
        f"{a['service']} (pid {a['pid']}, {_exit(a['exit'])})" for a in report["agents"]
    )
    print(f"stopped: {stopped}")
    print(f"spans: {report['spans']}")


async def _main(count: int) -> dict[str, Any]:
    agents = start_agents(AGENTS, os.environ)
    report: dict[str, Any] = {}
    try:
        await asyncio.to_thread(wait_until_healthy, agents)
        sessions = await _run_sessions(agents, count)
        refused = await call_with_outdated_hash(agents[0].url)
        report["sessions"] = [
            {**session.__dict__, "votes": dict(session.votes), "findings": list(session.findings)}
            for session in sessions
        ]
        report["refusal"] = {
            "agent": agents[0].service,
            "status": refused.status_code,
            "body": refused.json(),
        }
    finally:
        statuses = stop_agents(agents)
    report["agents"] = [
        {
            "agent": agent.agent,
            "service": agent.service,
            "pid": agent.pid,
            "url": agent.url,
            "constitutional_hash": agent.health.get("constitutional_hash"),
            "sinks": agent.health.get("sinks"),
            "exit": status,
        }
        for agent, status in zip(agents, statuses, strict=True)
    ]
    return report


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} sessions: run at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.distributed", description=__doc__)
    parser.add_argument("--sessions", type=_at_least_one, default=len(PROPOSALS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    # The agents inherit the hash: the example's own constitution unless one is configured.
    os.environ.setdefault("CONSTITUTIONAL_HASH", constitution_hash())
    agent_trace.configure(os.environ.get("OTEL_SERVICE_NAME") or "coordinator")
    try:
        report = asyncio.run(_main(args.sessions))
        report["spans"] = _where_spans_went()
    finally:
        delivered = agent_trace.shutdown(timeout_s=10.0)
    report["coordinator_delivered"] = delivered

    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

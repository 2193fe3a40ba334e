"""Agents as services: one coordination session, four processes, one trace.

`python -m examples.distributed` starts three agent services (ethics, legal, operations), each
its own uvicorn process on 127.0.0.1 on a port of its own, waits until each answers its health
route, and then coordinates review sessions whose turns are HTTP calls to the agents. Each
agent's side of a turn is a child of the coordinator's turn span, so a session is one trace
in Jaeger and one distributed trace in Sentry. The agents enforce the constitutional hash; the
run ends with one call made under an outdated constitution, which the agent refuses.

Where the spans go comes from the usual variables, passed on to every agent process:
`OTEL_EXPORTER_OTLP_ENDPOINT` (Jaeger, or a Collector), `SENTRY_DSN`, and with neither the
local file `.agent-trace/traces.jsonl` (read it with `agent-trace show`).

Modules:
    agent: the FastAPI app of one agent (which one comes from `AGENT_NAME`).
    coordinator: the review session, run in the process that started the agents.
    services: starting the agent processes, waiting for them, stopping them by PID.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["AGENTS", "CONSTITUTION_PATH", "constitution_hash", "service_name"]

AGENTS = ("ethics", "legal", "operations")
CONSTITUTION_PATH = Path(__file__).with_name("constitution.txt")


def constitution_hash() -> str:
    """The first 16 hex digits of the SHA-256 of the example's constitution."""
    return hashlib.sha256(CONSTITUTION_PATH.read_bytes()).hexdigest()[:16]


def service_name(agent: str) -> str:
    """The OpenTelemetry service name an agent's process reports under."""
    return f"{agent}-agent"

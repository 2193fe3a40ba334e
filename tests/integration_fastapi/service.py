"""The agent service the integration tests run as real uvicorn processes.

Configured from the environment the fixture passes (`OTEL_SERVICE_NAME`,
`OTEL_EXPORTER_OTLP_ENDPOINT`, `SENTRY_DSN`, `CONSTITUTIONAL_HASH`), with the header mode from
`TEST_SERVICE_HASH_MODE`. Endpoints answer what the server saw (its span's ids, its parent, the
client's port) so the tests can compare that with what Jaeger and Spotlight received.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from opentelemetry import trace

import agent_trace
from agent_trace.integrations.fastapi import instrument

agent_trace.configure()
app = FastAPI()

BACKGROUND_S = 0.3
CHUNK_GAP_S = 0.1


def whoami(request: Request) -> dict[str, Any]:
    """The server span as the handler sees it."""
    span = trace.get_current_span()
    ctx = span.get_span_context()
    parent = getattr(span, "parent", None)
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": None if parent is None else f"{parent.span_id:016x}",
        "client_port": request.client.port if request.client else None,
    }


@app.get("/whoami")
async def get_whoami(request: Request) -> dict[str, Any]:
    return whoami(request)


@app.post("/turn")
async def take_turn(request: Request) -> dict[str, Any]:
    # Long enough that two sessions' calls overlap when the client does not serialise them.
    await asyncio.sleep(0.05)
    with agent_trace.policy_check("privacy") as check:
        check.passed()
    return whoami(request)


@app.get("/fail")
async def fail() -> None:
    raise RuntimeError("the agent crashed")


@app.get("/reject")
async def reject() -> None:
    raise HTTPException(status_code=400, detail="the proposal is empty")


async def record_audit(session: str) -> None:
    with agent_trace.policy_check("audit"):
        await asyncio.sleep(BACKGROUND_S)


@app.post("/background")
async def with_background(request: Request, tasks: BackgroundTasks) -> dict[str, Any]:
    tasks.add_task(record_audit, "s-1")
    return whoami(request)


@app.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    ids = whoami(request)

    async def partial_output() -> AsyncIterator[str]:
        yield f"event: ids\ndata: {ids['trace_id']} {ids['span_id']}\n\n"
        for index in range(3):
            with agent_trace.turn("ethics", role="partial_output") as turn:
                await asyncio.sleep(CHUNK_GAP_S)
            yield f"data: {index} {turn.span_id} {time.time_ns()}\n\n"

    return StreamingResponse(partial_output(), media_type="text/event-stream")


instrument(app, constitutional_hash_mode=os.environ.get("TEST_SERVICE_HASH_MODE", "off"))  # type: ignore[arg-type]

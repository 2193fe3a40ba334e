"""Integrations with web frameworks, HTTP clients and metric readers; each needs an extra.

- `agent_trace.integrations.fastapi`: server spans for a FastAPI app, the
  `Constitutional-Hash` header rules and a health route (`pip install 'agent-trace[fastapi]'`).
- `agent_trace.integrations.httpx`: outgoing calls between agents carry the trace
  (`pip install 'agent-trace[fastapi]'`).
- `agent_trace.integrations.prometheus`: metrics for Prometheus to scrape
  (`pip install 'agent-trace[prometheus]'`).

This package itself imports none of the optional dependencies.
"""

from __future__ import annotations

__all__ = ["CONSTITUTIONAL_HASH_HEADER"]

# The request header naming the constitution a caller works under; FastAPI services check it,
# instrumented HTTP clients send it.
CONSTITUTIONAL_HASH_HEADER = "Constitutional-Hash"


def _missing_extra(module: str, extra: str, error: ImportError) -> ImportError:
    """The ImportError an integration raises when its optional dependency is absent."""
    missing = error.name or "a dependency"
    return ImportError(
        f"cannot import {module}, as {missing} is not installed: pip install 'agent-trace[{extra}]'"
    )

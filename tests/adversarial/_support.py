"""Shared pieces of the adversarial tests: hostile objects, trace-file lines, CLI runs.

Everything here talks only to files under the test's tmp_path and to servers the tests start
themselves on 127.0.0.1.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# A value that matches no scrubbing pattern on its own: if it shows up in exported bytes, the
# channel it went through leaked it.
SECRET = "Zq9vLm2Xw8RtK4"


# -- hostile objects ------------------------------------------------------------------------------


class FailingStr:
    """Every text form raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


class FailingLenStr(str):
    """A str whose len() raises."""

    def __len__(self) -> int:
        raise RuntimeError("no length")


class FailingEqStr(str):
    """A str that refuses to be compared."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparison")

    __hash__ = str.__hash__


class FailingCompareInt(int):
    """An int that refuses ordering comparisons."""

    def __le__(self, other: object) -> bool:
        raise RuntimeError("no ordering")

    __ge__ = __le__
    __lt__ = __le__
    __gt__ = __le__


class FailingStrInt(int):
    """An int whose text forms raise."""

    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


class WordyInt(int):
    """An int whose str() is not a number."""

    def __str__(self) -> str:
        return "seven"


class FailingStrError(Exception):
    """An exception whose message cannot be shown."""

    def __str__(self) -> str:
        raise RuntimeError("no message")


# -- running code in a clean context --------------------------------------------------------------


def isolated(fn: Callable[[], T]) -> T:
    """Run `fn` in a copy of the current context, so a leaked span stays in the copy."""
    return contextvars.copy_context().run(fn)


@contextmanager
def captured(**kwargs: Any) -> Iterator[CapturedSpans]:
    with capture_spans("adversarial", **kwargs) as spans:
        yield spans


def local_pipeline(path: Path, **kwargs: Any) -> None:
    """agent-trace configured with the local file only (the environment is not read)."""
    kwargs.setdefault("_env", {})
    agent_trace.configure("adversarial", local_path=path, local_file=True, **kwargs)


def file_span_names(path: Path) -> list[str]:
    """Span names of every line of a local trace file (json.loads keeps lone surrogates)."""
    names: list[str] = []
    if not path.exists():
        return names
    for line in path.read_text(encoding="utf-8").splitlines():
        request = json.loads(line)
        for resource_spans in request["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                names.extend(span["name"] for span in scope_spans["spans"])
    return names


# -- trace-file lines -----------------------------------------------------------------------------

START_NS = 1_700_000_000_000_000_000


def kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


def span_json(
    name: str = "invoke_workflow review",
    *,
    trace_id: str = "a" * 32,
    span_id: str = "b" * 16,
    parent: str | None = None,
    start: Any = str(START_NS),
    end: Any = str(START_NS + 1_000_000),
    attributes: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": start,
        "endTimeUnixNano": end,
        "attributes": attributes or [],
        "status": {"code": 0},
    }
    if parent is not None:
        span["parentSpanId"] = parent
    span.update(extra)
    return span


def request_line(*spans: dict[str, Any], service: str = "svc") -> str:
    """One OTLP/JSON export request, as the local file sink writes one line."""
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [kv("service.name", {"stringValue": service})]},
                    "scopeSpans": [{"scope": {"name": "agent_trace"}, "spans": list(spans)}],
                }
            ]
        }
    )


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# -- the command line, as a user runs it ----------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: bytes
    stderr: bytes

    @property
    def crashed(self) -> bool:
        """An uncaught exception: a traceback instead of an answer."""
        return b"Traceback (most recent call last)" in self.stderr


def run_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> CliResult:
    """`agent-trace ARGS` in a child process writing UTF-8, as to a UTF-8 terminal."""
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SENTRY_", "AGENT_TRACE_", "CONSTITUTIONAL_"))
    }
    child_env["PYTHONIOENCODING"] = "utf-8"
    child_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "agent_trace.cli", *args],
        cwd=REPO,
        env=child_env,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)

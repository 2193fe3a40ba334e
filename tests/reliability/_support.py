"""Helpers the reliability tests share: reading back the local file, running child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.backends._support import scrubbed_env
from tests.backends.spotlight import Envelope, Spotlight

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class FileSpan:
    """One span as the local file sink wrote it (OTLP/JSON), with its attributes decoded."""

    raw: dict[str, Any]
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def trace_id(self) -> str:
        return str(self.raw["traceId"])

    @property
    def span_id(self) -> str:
        return str(self.raw["spanId"])

    @property
    def parent_id(self) -> str | None:
        parent = self.raw.get("parentSpanId")
        return str(parent) if parent else None

    @property
    def attributes(self) -> dict[str, Any]:
        return {kv["key"]: any_value(kv["value"]) for kv in self.raw.get("attributes", [])}


def any_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as the Python value the SDK held (ints back from their strings)."""
    [(kind, inner)] = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "arrayValue":
        return [any_value(v) for v in inner.get("values", [])]
    return inner


def file_spans(path: Path) -> list[FileSpan]:
    """Every span of every line of a local trace file, in file order."""
    if not path.exists():
        return []
    spans = []
    for line in path.read_text(encoding="utf-8").splitlines():
        request = json.loads(line)
        for resource_spans in request["resourceSpans"]:
            resource = {
                kv["key"]: any_value(kv["value"])
                for kv in resource_spans["resource"].get("attributes", [])
            }
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    spans.append(FileSpan(span, resource))
    return spans


@dataclass(frozen=True)
class ChildResult:
    returncode: int
    stdout: str
    stderr: str


def run_child(
    script: str | Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60,
    warnings: str = "default",
) -> ChildResult:
    """Run a Python script (a file under tests/reliability/ or source text) in a fresh process.

    The child gets no OTEL_*/SENTRY_* variables of ours, and imports this checkout. By default
    every warning is shown, including those the interpreter hides (ResourceWarning...).
    """
    child_env = scrubbed_env({"PYTHONPATH": str(REPO), **(env or {})})
    child_env["PYTHONWARNINGS"] = warnings
    if isinstance(script, Path):
        command = [sys.executable, str(script), *args]
    else:
        command = [sys.executable, "-c", script, *args]
    done = subprocess.run(
        command,
        env=child_env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return ChildResult(done.returncode, done.stdout, done.stderr)


def assert_quiet_exit(result: ChildResult) -> None:
    """The child exited 0 with nothing alarming on stderr (no traceback, no warning)."""
    assert result.returncode == 0, result.stderr
    lowered = result.stderr.lower()
    for word in ("traceback", "warning", "error", "exception"):
        assert word not in lowered, result.stderr


def spotlight_bytes(spotlight: Spotlight, envelopes: list[Envelope]) -> bytes:
    """Everything Spotlight holds for these envelopes: the bytes as posted and as streamed."""
    parts = [spotlight.raw_envelope(envelope) for envelope in envelopes]
    parts.extend(
        json.dumps([e.header, [[i.header, _jsonable(i.payload)] for i in e.items]]).encode()
        for e in envelopes
    )
    return b"\n".join(parts)


def _jsonable(payload: Any) -> Any:
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload


def iter_strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON-like value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from iter_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from iter_strings(item)


def child_env_for(**values: str | os.PathLike[str]) -> dict[str, str]:
    return {key: os.fspath(value) for key, value in values.items()}

"""`agent-trace doctor`: check a real setup end to end, sink by sink."""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from typing import Any

import agent_trace
from agent_trace import _runtime
from agent_trace._config import ConfigurationError
from agent_trace.cli._common import add_sink_options, config_error, printable, sink_kwargs


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "doctor",
        help="check the configured sinks by sending one test trace",
        description="Read the configuration (these options, else the environment variables "
        "agent_trace.configure reads), send one test trace, and say per sink whether it was "
        "delivered; with --jaeger-query-url also confirm that Jaeger stored it. Exits 1 when "
        "any check fails.",
    )
    parser.add_argument("--jaeger-query-url", help="Jaeger query API, e.g. http://127.0.0.1:16686")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per check")
    parser.add_argument("--local-path", help="trace file to test when no remote sink is set")
    add_sink_options(parser)


def _line(ok: bool, name: str, detail: str) -> None:
    # The detail can quote a server's answer or an exception's text: print no controls from it.
    print(printable(f"{'PASS' if ok else 'FAIL'}  {name:<11} {detail}"))


def run(args: argparse.Namespace) -> int:
    try:
        settings = agent_trace.configure(
            args.service_name or "agent-trace-doctor",
            local_path=args.local_path,
            export_timeout_s=min(args.timeout, 10.0),
            # Each sink checked from this process, its deliveries counted here.
            export_process=False,
            **sink_kwargs(args),
        )
    except ConfigurationError as exc:
        return config_error(exc)

    pipeline = _runtime.current()
    assert pipeline is not None
    print(printable(f"service {settings.service_name}; sinks: {', '.join(settings.sinks)}"))
    drops_before = agent_trace.dropped_spans()
    with agent_trace.session("doctor", agents=["doctor"]) as session, session.turn("doctor"):
        pass
    trace_id = session.trace_id
    print(f"sent test trace {trace_id}")
    agent_trace.force_flush(timeout_s=args.timeout)
    drops_after = agent_trace.dropped_spans()

    failures = 0
    for worker in pipeline.workers:
        name = worker.sink.name
        lost = {
            reason: n - drops_before.get((sink, reason), 0)
            for (sink, reason), n in drops_after.items()
            if sink == name and n > drops_before.get((sink, reason), 0)
        }
        ok = worker.exported >= 2 and worker.last_error is None and not lost
        detail = worker.sink.describe()
        if not ok:
            reason = worker.last_error or ", ".join(f"{r}: {n}" for r, n in lost.items())
            detail += f": not delivered ({reason or 'no answer within the timeout'})"
        else:
            detail += ": delivered"
        _line(ok, name, detail)
        failures += not ok

    if args.jaeger_query_url:
        found, detail = _jaeger_has(args.jaeger_query_url, trace_id, args.timeout)
        _line(found, "jaeger", detail)
        failures += not found
    agent_trace.shutdown(timeout_s=args.timeout)
    return 1 if failures else 0


def _jaeger_has(base_url: str, trace_id: str, timeout_s: float) -> tuple[bool, str]:
    url = f"{base_url.rstrip('/')}/api/traces/{trace_id}"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=min(2.0, timeout_s)) as response:
                body = json.load(response)
            spans = sum(len(t.get("spans", [])) for t in body.get("data") or [])
            if spans >= 2:
                return True, f"{base_url}: trace {trace_id} stored ({spans} spans)"
            last = "trace incomplete"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.25)
    return False, f"{base_url}: trace {trace_id} not found ({last})"

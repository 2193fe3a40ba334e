"""What the figures share: discarding exporters and sinks, pipelines built side by side, the
raw OpenTelemetry SDK baseline, the receivers process and the workloads themselves.

Several figures compare pipelines in one process. `configure()` replaces (and shuts down)
the pipeline before it, so these are built with `agent_trace._runtime.Pipeline` directly and
made current in turn with `_runtime.install`, exactly what `configure()` does after
validating its settings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import agent_trace
from agent_trace import _runtime
from agent_trace._config import resolve_settings

# The five attributes of a standalone turn: `agent_trace.turn("ethics", role="reviewer")`
# outside a session sets exactly these (two its own, three every span carries but the
# conversation id, which only a session gives). The raw baseline sets the same ones.
TURN_ATTRIBUTES: dict[str, Any] = {
    "agent_trace.constitution.hash": "unset",
    "sentry.op": "gen_ai.invoke_agent",
    "gen_ai.operation.name": "invoke_agent",
    "gen_ai.agent.name": "ethics",
    "agent_trace.agent.role": "reviewer",
}
AGENTS = ("ethics", "legal", "ops")


class DiscardExporter(SpanExporter):
    """The baseline's exporter: takes every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class DiscardSink:
    """An agent-trace sink on its own queue and export thread that keeps nothing."""

    name = "discard"

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        return True

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None

    def describe(self) -> str:
        return "nowhere"


class HungSink(DiscardSink):
    """A sink whose export never returns until the process ends: its queue stays full."""

    name = "hung"

    def __init__(self) -> None:
        self._release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        self._release.wait()
        return False


def raw_provider() -> TracerProvider:
    """The floor: the SDK's provider with a batch processor and a discarding exporter."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardExporter()))
    return provider


def build_pipeline(*, extra_sinks: Sequence[Any] = (), **settings: Any) -> _runtime.Pipeline:
    """A pipeline as `configure()` would build it, without installing it.

    The environment is not read, and the local file is off unless asked for.
    """
    settings.setdefault("local_file", False)
    resolved = resolve_settings("bench", env={}, **settings)
    return _runtime.Pipeline(resolved, extra_sinks=extra_sinks)


def install(pipeline: _runtime.Pipeline | None) -> None:
    """Make `pipeline` current (None: agent-trace behaves as imported, not configured)."""
    if pipeline is None:
        current = _runtime.current()
        if current is not None:
            _runtime.uninstall(current)
        return
    _runtime.install(pipeline)


def drain(pipeline: _runtime.Pipeline, timeout_s: float = 10.0) -> bool:
    """Wait until the pipeline's export threads have handled every span ended so far."""
    return pipeline.processor.force_flush(int(timeout_s * 1000))


def dropped(pipeline: _runtime.Pipeline | None = None) -> int:
    """Spans dropped so far, for every sink (or those of one pipeline)."""
    counts = agent_trace.dropped_spans()
    if pipeline is None:
        return sum(counts.values())
    names = set(pipeline.processor.sink_names)
    return sum(count for (sink, _), count in counts.items() if sink in names)


def dropped_by_reason() -> dict[str, int]:
    """Spans dropped so far as `{"sink/reason": count}`, for the table's detail column."""
    return {
        f"{sink}/{reason}": count for (sink, reason), count in agent_trace.dropped_spans().items()
    }


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- workloads ------------------------------------------------------------------------------


def agent_trace_turns(n: int) -> None:
    turn = agent_trace.turn
    for _ in range(n):
        with turn("ethics", role="reviewer"):
            pass


def agent_trace_nested(n: int) -> None:
    """Session > turn > consensus round: the three spans of the nested figure."""
    session = agent_trace.session
    for _ in range(n):
        with (
            session("ethical_review", agents=AGENTS) as s,
            s.turn("ethics", role="reviewer"),
            s.consensus_round("weighted_vote", participants=AGENTS, threshold=0.66, round=1),
        ):
            pass


def agent_trace_review(n: int) -> None:
    """A small review: session, two turns, a round with three votes (7 spans)."""
    session = agent_trace.session
    for _ in range(n):
        with session("ethical_review", agents=AGENTS) as s:
            with s.turn("ethics", role="reviewer"):
                pass
            with s.turn("legal", role="reviewer"):
                pass
            with s.consensus_round(
                "weighted_vote", participants=AGENTS, threshold=0.66, round=1
            ) as rnd:
                rnd.vote("ethics", "approve", weight=2.0, confidence=0.9)
                rnd.vote("legal", "approve", weight=1.0, confidence=0.7)
                rnd.vote("ops", "reject", weight=1.0, confidence=0.6)
            s.set_outcome("approved")


REVIEW_SPANS = 7


def nested_attributes() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, start attributes, end attributes) of the nested figure's three spans, as
    agent-trace records them, so the raw baseline sets exactly the same data."""
    from agent_trace.testing import capture_spans

    with capture_spans("bench") as captured:
        agent_trace_nested(1)
        spans = {s.name: s for s in captured.spans}
    out = []
    for name in (
        "invoke_workflow ethical_review",
        "invoke_agent ethics",
        "consensus_round weighted_vote",
    ):
        attrs = dict(spans[name].attributes or {})
        ending = {}
        for key in list(attrs):
            # Known only at the end: the session's outcome and the round's tally.
            if (
                key.endswith(".outcome")
                or key.startswith("agent_trace.consensus.votes")
                or key in ("agent_trace.consensus.agreement",)
            ):
                ending[key] = attrs.pop(key)
        out.append((name, attrs, ending))
    return out


def raw_nested(
    tracer: trace.Tracer, spans: list[tuple[str, dict[str, Any], dict[str, Any]]]
) -> Callable[[int], None]:
    """The baseline of the nested figure: three raw SDK spans, nested, same attributes."""
    (n1, a1, e1), (n2, a2, e2), (n3, a3, e3) = spans
    start = tracer.start_as_current_span

    def run(n: int) -> None:
        for _ in range(n):
            with start(n1, attributes=a1) as s1:
                with start(n2, attributes=a2) as s2:
                    with start(n3, attributes=a3) as s3:
                        s3.set_attributes(e3)
                    s2.set_attributes(e2)
                s1.set_attributes(e1)

    return run


def raw_turns(tracer: trace.Tracer) -> Callable[[int], None]:
    start = tracer.start_as_current_span
    attrs = TURN_ATTRIBUTES

    def run(n: int) -> None:
        for _ in range(n):
            with start("invoke_agent ethics", attributes=attrs):
                pass

    return run


def paced(produce: Any, spans_per_call: int, rate: float, duration_s: float) -> int:
    """Call `produce(1)` so that `rate` spans a second end, for `duration_s`; returns spans."""
    tick_s = 0.01
    per_tick = rate * tick_s / spans_per_call
    made = 0.0
    done = 0
    start = time.perf_counter()
    next_tick = start
    while True:
        now = time.perf_counter()
        if now - start >= duration_s:
            break
        made += per_tick
        calls = int(made) - done
        if calls > 0:
            produce(calls)
            done += calls
        next_tick += tick_s
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return done * spans_per_call


# -- the receivers process ------------------------------------------------------------------


class Receivers:
    """The `benchmarks._receivers` process: OTLP gRPC/HTTP, Sentry envelopes, a hung port."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._receivers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the receivers process exited before listening")
        ports = json.loads(line)
        self.grpc_endpoint = f"http://127.0.0.1:{ports['grpc']}"
        self.http_port = ports["http"]
        self.http_endpoint = f"http://127.0.0.1:{ports['http']}/v1/traces"
        self.dsn = f"http://public@127.0.0.1:{ports['http']}/0"
        self.hang_port = ports["hang"]

    def stats(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/stats", timeout=5) as r:
            counts: dict[str, int] = json.loads(r.read())
        return counts

    def stop(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@contextmanager
def receivers() -> Iterator[Receivers]:
    started = Receivers()
    try:
        yield started
    finally:
        started.stop()

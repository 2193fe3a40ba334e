"""Sentry: CPU per root span through our envelope sink, against sentry-sdk's own OpenTelemetry
span processor (`sentry_sdk.integrations.opentelemetry.SentrySpanProcessor`).

The same OpenTelemetry calls make the same trees on two providers: agent-trace's (scrubbing,
the Sentry envelope sink on its export thread) and a plain SDK provider with Sentry's processor
(which builds Sentry spans as the OpenTelemetry ones start and end). Both hand their envelopes
to one sentry-sdk client whose transport serialises each envelope and drops the bytes, so
neither pays for compression or HTTP. A sample's cost is the CPU time of the whole process,
export thread included, until every transaction reached the transport.
"""

from __future__ import annotations

import time
from typing import Any

import sentry_sdk
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from benchmarks import _fixtures as fx
from benchmarks._harness import Case, Row, Settings, compare, ratio_row

FIGURE = "Sentry envelope sink CPU per root / SentrySpanProcessor"

# Never connected to: the transport below drops everything.
_DSN = "http://public@127.0.0.1:9/0"


class SerializeAndDrop(Transport):
    """Counts and serialises each envelope (what a real transport does first), then drops it."""

    envelopes = 0

    def capture_envelope(self, envelope: Envelope) -> None:
        envelope.serialize()
        SerializeAndDrop.envelopes += 1

    def flush(self, timeout: float, callback: Any = None) -> None:
        return None

    def kill(self) -> None:
        return None


def _tree(tracer: trace.Tracer) -> Any:
    """A root with six descendants: two turns and a round with three votes."""
    start = tracer.start_as_current_span
    common: dict[str, Any] = {
        "agent_trace.constitution.hash": "unset",
        "gen_ai.conversation.id": "c" * 32,
    }
    root = {**common, "sentry.op": "agent_trace.session", "gen_ai.workflow.name": "review"}
    turn = {**common, "sentry.op": "gen_ai.invoke_agent", "gen_ai.operation.name": "invoke_agent"}
    rnd = {**common, "sentry.op": "agent_trace.consensus.round", "agent_trace.consensus.round": 1}
    vote = {**common, "sentry.op": "agent_trace.vote", "agent_trace.vote.value": "approve"}

    def run(n: int) -> None:
        for _ in range(n):
            with start("invoke_workflow review", attributes=root):
                with start("invoke_agent ethics", attributes=turn):
                    pass
                with start("invoke_agent legal", attributes=turn):
                    pass
                with start("consensus_round weighted_vote", attributes=rnd):
                    for agent in fx.AGENTS:
                        with start(f"vote {agent}", attributes=vote):
                            pass

    return run


class CpuCase(Case):
    def __init__(self, name: str, run: Any, settle: Any) -> None:
        self.name = name
        self._run = run
        self._settle = settle

    def sample(self, n: int) -> float:
        start = time.process_time()
        self._run(n)
        self._settle()
        return time.process_time() - start


def run(settings: Settings) -> list[Row]:
    from sentry_sdk.integrations.opentelemetry import SentrySpanProcessor

    sentry_sdk.init(
        dsn=_DSN,
        transport=SerializeAndDrop,
        traces_sample_rate=1.0,
        instrumenter="otel",
        default_integrations=False,
        auto_enabling_integrations=False,
    )
    # agent-trace borrows the client the application set up for the same DSN.
    ours = fx.build_pipeline(sentry_dsn=_DSN)
    fx.install(ours)
    theirs = TracerProvider()
    theirs.add_span_processor(SentrySpanProcessor())

    before = SerializeAndDrop.envelopes
    cases = [
        CpuCase("sentry_processor", _tree(theirs.get_tracer("bench")), lambda: None),
        CpuCase("agent_trace", _tree(ours.tracer), lambda: fx.drain(ours)),
    ]
    # 7 spans a root: a sample must fit in the 2,048-span queue.
    comparison = compare(cases, settings, max_n=250)
    envelopes = SerializeAndDrop.envelopes - before
    sent = getattr(ours.sinks[0], "transactions_sent", "?")
    return [
        ratio_row(
            FIGURE,
            comparison,
            "agent_trace",
            "sentry_processor",
            goal="<= 0.30",
            detail=f"root + 6 spans, CPU of all threads; {envelopes} envelopes serialised, "
            f"{sent} from agent-trace; drops {fx.dropped_by_reason()}",
        )
    ]

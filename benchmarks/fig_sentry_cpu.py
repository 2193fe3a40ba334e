"""Sentry: CPU per root span through our envelope sink, against sentry-sdk's own OpenTelemetry
span processor (`sentry_sdk.integrations.opentelemetry.SentrySpanProcessor`).

The same OpenTelemetry calls make the same trees on two providers: agent-trace's (scrubbing,
the Sentry envelope sink on its export thread, which posts each transaction itself) and a
plain SDK provider with Sentry's processor (which builds Sentry spans as the OpenTelemetry ones
start and end, and hands each transaction to sentry-sdk's HTTP transport). Both send to the
same local receiver (`benchmarks._receivers`, another process), each through its own
transport: the sink no longer uses sentry-sdk's, so one transport cannot stand in for both.
A sample's cost is the CPU time of the whole process, every thread included, until every
transaction was answered.
"""

from __future__ import annotations

import time
from typing import Any

import sentry_sdk
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from benchmarks import _fixtures as fx
from benchmarks._harness import Case, Row, Settings, compare, ratio_row

FIGURE = "Sentry envelope sink CPU per root / SentrySpanProcessor"


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

    with fx.receivers() as receivers:
        sentry_sdk.init(
            dsn=receivers.dsn,
            traces_sample_rate=1.0,
            instrumenter="otel",
            default_integrations=False,
            auto_enabling_integrations=False,
            # A sample's transactions must all fit in its queue (100 by default), or the
            # baseline would look cheap by dropping.
            transport_queue_size=1_000,
        )
        # agent-trace keeps sentry-sdk, the application's client here, for its error events.
        # The sink on a thread of this process, where its CPU is measured.
        ours = fx.build_pipeline(sentry_dsn=receivers.dsn, export_process=False)
        fx.install(ours)
        theirs = TracerProvider()
        theirs.add_span_processor(SentrySpanProcessor())
        client = sentry_sdk.get_client()

        before = receivers.stats()["sentry_envelopes"]
        made = {"sentry_processor": 0, "agent_trace": 0}

        def counted(name: str, run: Any) -> Any:
            def wrapper(n: int) -> None:
                made[name] += n
                run(n)

            return wrapper

        cases = [
            CpuCase(
                "sentry_processor",
                counted("sentry_processor", _tree(theirs.get_tracer("bench"))),
                lambda: client.flush(timeout=10),
            ),
            CpuCase(
                "agent_trace", counted("agent_trace", _tree(ours.tracer)), lambda: fx.drain(ours)
            ),
        ]
        # 7 spans a root: a sample must fit in the 2,048-span queue.
        comparison = compare(cases, settings, max_n=250)
        received = receivers.stats()["sentry_envelopes"] - before
    sent = getattr(ours.sinks[0], "transactions_sent", "?")
    return [
        ratio_row(
            FIGURE,
            comparison,
            "agent_trace",
            "sentry_processor",
            goal="<= 0.30",
            detail=f"root + 6 spans, CPU of all threads, both posting to the local receiver; "
            f"roots made {made['agent_trace']} + {made['sentry_processor']}, envelopes "
            f"received {received} ({sent} from agent-trace); drops {fx.dropped_by_reason()}",
        )
    ]

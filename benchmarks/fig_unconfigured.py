"""agent-trace imported but never configured, against OpenTelemetry's no-op API spans.

This is what a library that calls agent-trace costs an application that does not trace:
the baseline is the OpenTelemetry API with no SDK installed, the same calls made on it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from benchmarks import _fixtures as fx
from benchmarks._harness import FunctionCase, Row, Settings, compare, ratio_row

TURN = "unconfigured turn / no-op API span"
NESTED = "unconfigured session > turn > round / 3 no-op spans"


def run(settings: Settings) -> list[Row]:
    fx.install(None)
    # No SDK provider is ever set in this process: the API hands out its proxy, no-op tracer.
    tracer = trace.get_tracer("bench")
    spans: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("invoke_workflow ethical_review", {"gen_ai.operation.name": "invoke_workflow"}, {}),
        ("invoke_agent ethics", fx.TURN_ATTRIBUTES, {}),
        ("consensus_round weighted_vote", {"agent_trace.consensus.round": 1}, {}),
    ]
    cases = [
        FunctionCase("noop_turn", fx.raw_turns(tracer)),
        FunctionCase("turn", fx.agent_trace_turns),
        FunctionCase("noop_nested", fx.raw_nested(tracer, spans)),
        FunctionCase("nested", fx.agent_trace_nested),
    ]
    comparison = compare(cases, settings)
    return [
        ratio_row(TURN, comparison, "turn", "noop_turn", goal="<= 1.00", detail="aim 0.1"),
        ratio_row(NESTED, comparison, "nested", "noop_nested", goal="<= 1.00", detail="aim 0.1"),
    ]

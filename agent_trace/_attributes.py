"""Attribute names, and the one rule that turns any Python value into an attribute value.

The rule (applied by the model before a span is recorded, so every sink sees the same value):

- `str`, `bool`, `int` (64-bit) and finite `float` are kept; strings longer than
  `MAX_VALUE_LENGTH` characters are cut and end with `...[truncated N chars]`.
- `None` is left out (the attribute is not set).
- NaN and infinities become the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (JSON has no such
  numbers, so keeping them as floats would make the sinks disagree).
- integers outside the signed 64-bit range become their decimal string.
- `bytes` are decoded as UTF-8, undecodable bytes replaced by U+FFFD.
- lists and tuples whose items are all `str`, all `bool`, or all numbers are kept as sequences
  (at most `MAX_SEQUENCE_ITEMS` items); any other sequence, and every mapping, becomes a
  compact JSON string (keys sorted, values converted by this same rule).
- anything else becomes `str(value)`, or `<unrepresentable TypeName>` if `str()` fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.util.types import AttributeValue

MAX_VALUE_LENGTH = 4096
MAX_SEQUENCE_ITEMS = 128

CONSTITUTION_HASH = "agent_trace.constitution.hash"
CONVERSATION_ID = "gen_ai.conversation.id"
SENTRY_OP = "sentry.op"
OPERATION_NAME = "gen_ai.operation.name"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
WORKFLOW_NAME = "gen_ai.workflow.name"
ERROR_TYPE = "error.type"

SESSION_TASK_TYPE = "agent_trace.session.task_type"
SESSION_AGENTS = "agent_trace.session.agents"
SESSION_COMPLEXITY = "agent_trace.session.complexity"
SESSION_OUTCOME = "agent_trace.session.outcome"
SESSION_INCOMPLETE = "agent_trace.session.incomplete"

TURN_INDEX = "agent_trace.turn.index"
AGENT_ROLE = "agent_trace.agent.role"

CONSENSUS = "agent_trace.consensus."
VOTE = "agent_trace.vote."
COMPLIANCE = "agent_trace.compliance."
HANDOFF = "agent_trace.handoff."
CONFLICT = "agent_trace.conflict."
ESCALATION = "agent_trace.escalation."
TARGET = "agent_trace.target."
MESSAGE = "agent_trace.message."
CANCELLED = "agent_trace.cancelled"

UNSET_HASH = "unset"

# Free text that only `capture_content=True` lets through; the scrubber enforces it again.
CONTENT_KEYS = frozenset(
    {
        "agent_trace.vote.rationale",
        "agent_trace.message.content",
        "agent_trace.escalation.note",
        "agent_trace.proposal.content",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
    }
)

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _truncate(text: str) -> str:
    if len(text) <= MAX_VALUE_LENGTH:
        return text
    cut = len(text) - MAX_VALUE_LENGTH
    return f"{text[:MAX_VALUE_LENGTH]}...[truncated {cut} chars]"


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _jsonable(value: object, depth: int = 0) -> object:
    if depth > 8:
        return "<nested too deep>"
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _float_text(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return _jsonable_mapping(value, depth)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1) for v in list(value)[:MAX_SEQUENCE_ITEMS]]
    return _safe_str(value)


def _jsonable_mapping(value: Mapping[Any, Any], depth: int) -> dict[str, object]:
    """The mapping with the values of secret-named keys redacted.

    The mapping leaves as one JSON string, so the scrubber sees no keys in it any more: the
    key rule has to be applied here, before encoding.
    """
    # Imported here: the scrubber imports this module.
    from agent_trace.pipeline.scrub import REDACTED, is_secret_key

    out: dict[str, object] = {}
    for key, item in value.items():
        name = _safe_str(key)
        out[name] = REDACTED if is_secret_key(name) else _jsonable(item, depth + 1)
    return out


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def to_attribute(value: Any) -> AttributeValue | None:
    """Convert `value` by the module's rule; `None` means "do not set the attribute"."""
    if value is None:
        return None
    if isinstance(value, str):
        return _truncate(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _float_text(value)
    if isinstance(value, bytes):
        return _truncate(value.decode("utf-8", "replace"))
    if isinstance(value, (list, tuple)):
        return _sequence(value)
    if isinstance(value, Mapping):
        return _truncate(json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":")))
    return _truncate(_safe_str(value))


def _sequence(items: Sequence[Any]) -> AttributeValue:
    head = list(items[:MAX_SEQUENCE_ITEMS])
    if all(isinstance(v, str) for v in head):
        return [_truncate(v) for v in head]
    if all(isinstance(v, bool) for v in head):
        return head
    if all(
        isinstance(v, int) and not isinstance(v, bool) and _INT_MIN <= v <= _INT_MAX for v in head
    ):
        return head
    if all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in head
    ):
        return [float(v) for v in head]
    return _truncate(json.dumps(_jsonable(head), sort_keys=True, separators=(",", ":")))


def to_attributes(values: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Convert a mapping by the rule, leaving out `None` values and non-string keys' quirks."""
    converted: dict[str, AttributeValue] = {}
    for key, value in values.items():
        attr = to_attribute(value)
        if attr is not None:
            converted[_safe_str(key)] = attr
    return converted

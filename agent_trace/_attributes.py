"""Attribute names, and the one rule that turns any Python value into an attribute value.

The rule (applied by the model before a span is recorded, so every sink sees the same value):

- `str`, `bool`, `int` (64-bit) and finite `float` are kept; strings longer than
  `MAX_VALUE_LENGTH` characters are cut and end with `...[truncated N chars]`.
- lone surrogates in text (`"\\ud800"`) become U+FFFD: no UTF-8 encoder accepts them, and an
  OTLP exporter that meets one loses its whole batch.
- `None` is left out (the attribute is not set).
- NaN and infinities become the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (JSON has no such
  numbers, so keeping them as floats would make the sinks disagree).
- integers outside the signed 64-bit range become their decimal string.
- `bytes` are decoded as UTF-8, undecodable bytes replaced by U+FFFD.
- lists and tuples whose items are all `str`, all `bool`, or all numbers are kept as sequences
  (at most `MAX_SEQUENCE_ITEMS` items); any other sequence, and every mapping, becomes a
  compact JSON string (keys sorted, values converted by this same rule).
- anything else becomes `str(value)`, or `<unrepresentable TypeName>` if `str()` fails.
- subclasses of `str`, `int` and `float` become the plain value first (read with the base
  type's own methods), so no method a subclass overrides (`__len__`, `__eq__`, `__str__`,
  comparisons) runs while a span is recorded or exported.
- integers too long for decimal text (over 4300 digits) become `<int of N bits>`.

Span names are built from the same kind of values (`invoke_agent {agent}`); `name_text` gives
a value's text for a name without ever raising. The pipeline's scrubber, which every finished
span passes whichever API made it, applies the text steps once more where the model cannot:
lone surrogates become U+FFFD in names, attribute keys, event names and values set through the
raw OpenTelemetry API (`replace_surrogates`), and span names longer than `MAX_NAME_LENGTH`
characters are cut like values (`bounded_name`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.util.types import AttributeValue

MAX_VALUE_LENGTH = 4096
MAX_SEQUENCE_ITEMS = 128
MAX_NAME_LENGTH = MAX_VALUE_LENGTH

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
# Any other scope still open at interpreter exit, ended by the exit hook.
INCOMPLETE = "agent_trace.incomplete"

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
_PLAIN_ITEMS = frozenset({str, bool, int, float})


def _truncate(text: str) -> str:
    if len(text) <= MAX_VALUE_LENGTH:
        return text
    cut = len(text) - MAX_VALUE_LENGTH
    return f"{text[:MAX_VALUE_LENGTH]}...[truncated {cut} chars]"


def _text(text: str) -> str:
    """A text value by the rule: lone surrogates replaced, then cut."""
    return _truncate(replace_surrogates(text))


def _safe_str(value: object) -> str:
    """`str(value)` as a plain str; `<unrepresentable T>` when the value's text fails."""
    try:
        text = str(value)
        # __str__ may return a str subclass, whose own methods must not run later either.
        return text if type(text) is str else str.__str__(text)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:
        # Python refuses decimal text for ints over 4300 digits (a denial-of-service guard).
        return f"<int of {value.bit_length()} bits>"


def _plain(value: object) -> object:
    """A str/int/float subclass instance as the plain value, read by the base type's methods."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return value


def name_text(value: object) -> str:
    """`value` as text for a span name (plain str), never raising; not cut (the scrubber cuts)."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    return _safe_str(_plain(value))


def _jsonable(value: object, depth: int = 0) -> object:
    if depth > 8:
        return "<nested too deep>"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (str, int, float)) and type(value) not in _PLAIN_ITEMS:
        value = _plain(value)
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else _int_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _float_text(value)
    if isinstance(value, bytes):
        return bytes.decode(value, "utf-8", "replace")
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
    # The plain types first, by exact type: the common case, and no subclass method can run.
    if type(value) is str:
        return value if value.isascii() and len(value) <= MAX_VALUE_LENGTH else _text(value)
    if type(value) is bool:
        return value
    if type(value) is int:
        return value if _INT_MIN <= value <= _INT_MAX else _int_text(value)
    if type(value) is float:
        return value if math.isfinite(value) else _float_text(value)
    if value is None:
        return None
    try:
        return _convert(value)
    except Exception:
        # A container whose own methods raise (a list subclass, a Mapping's items()).
        return f"<unrepresentable {type(value).__name__}>"


def _convert(value: object) -> AttributeValue:
    """The rule for everything but the plain scalars and None."""
    if isinstance(value, (list, tuple)):
        return _sequence(value)
    if isinstance(value, (str, int, float)):
        # A subclass (bool has none): its plain value, converted as such.
        return to_attribute(_plain(value))
    if isinstance(value, bytes):
        return _truncate(bytes.decode(value, "utf-8", "replace"))
    if isinstance(value, Mapping):
        return _json_text(value)
    return _text(_safe_str(value))


def _json_text(value: object) -> str:
    return _truncate(json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":")))


def _sequence(items: Sequence[Any]) -> AttributeValue:
    head = list(items[:MAX_SEQUENCE_ITEMS])
    kinds = set(map(type, head))
    if not kinds <= _PLAIN_ITEMS:
        head = [_plain(v) for v in head]
        kinds = set(map(type, head))
    if not head or kinds == {str}:
        return [v if v.isascii() and len(v) <= MAX_VALUE_LENGTH else _text(v) for v in head]
    if kinds == {bool}:
        return head
    if kinds == {int} and min(head) >= _INT_MIN and max(head) <= _INT_MAX:
        return head
    if kinds <= {int, float} and all(_plain_number(v) for v in head):
        return [float(v) for v in head]
    # Mixed, non-finite or beyond 64 bits: JSON text, whose items follow the scalar rule
    # (an int beyond 64 bits becomes its decimal string, as on its own).
    return _json_text(head)


def _plain_texts(items: Sequence[Any]) -> bool:
    """Whether a list is kept as it is by the rule: 1 to `MAX_SEQUENCE_ITEMS` plain ASCII texts
    of at most `MAX_VALUE_LENGTH` characters (agents, participants). Each test runs at C speed."""
    return (
        0 < len(items) <= MAX_SEQUENCE_ITEMS
        and set(map(type, items)) == _STR_ONLY
        and "".join(items).isascii()
        and max(map(len, items)) <= MAX_VALUE_LENGTH
    )


_STR_ONLY = {str}


def _plain_number(value: int | float) -> bool:
    """Whether a number keeps its value in a float array: finite, and an int within 64 bits."""
    if type(value) is float:
        return math.isfinite(value)
    return _INT_MIN <= value <= _INT_MAX


def replace_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD; `text` itself when it has none.

    ASCII text is settled in constant time (CPython knows a string is ASCII).
    """
    if text.isascii():
        return text
    return _SURROGATES.sub("\ufffd", text)


def bounded_name(name: str) -> str:
    """A span name with lone surrogates replaced and cut at `MAX_NAME_LENGTH` characters."""
    name = replace_surrogates(name)
    if len(name) <= MAX_NAME_LENGTH:
        return name
    cut = len(name) - MAX_NAME_LENGTH
    return f"{name[:MAX_NAME_LENGTH]}...[truncated {cut} chars]"


_SURROGATES = re.compile("[\ud800-\udfff]")


def to_attributes(values: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Convert a mapping by the rule, leaving out `None` values and non-string keys' quirks."""
    converted: dict[str, AttributeValue] = {}
    for key, value in values.items():
        # The plain cases of `to_attribute` inline (every span converts a handful of values:
        # a call each was a tenth of a turn's own cost); the rest goes through it.
        kind = type(value)
        if kind is str:
            attr: AttributeValue | None = (
                value if value.isascii() and len(value) <= MAX_VALUE_LENGTH else _text(value)
            )
        elif value is None:
            continue
        elif kind is bool or (kind is int and _INT_MIN <= value <= _INT_MAX):
            attr = value
        elif kind is float:
            attr = value if math.isfinite(value) else _float_text(value)
        elif (kind is tuple or kind is list) and _plain_texts(value):
            attr = tuple(value)
        else:
            attr = to_attribute(value)
            if attr is None:
                continue
            if type(attr) is list:
                # As the SDK keeps it, so that a scope can hand its attributes over as they are.
                attr = tuple(attr)
        converted[key if type(key) is str else _safe_str(key)] = attr
    return converted

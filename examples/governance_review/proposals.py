"""Proposals for the governance board, read from a JSON file and validated field by field."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "AUTOMATION_LEVELS",
    "CATEGORIES",
    "CONSENT",
    "DATA_CATEGORIES",
    "DEFAULT_PROPOSALS_PATH",
    "PERSONAL_DATA",
    "RISK_LEVELS",
    "ROLLOUT_STRATEGIES",
    "SPECIAL_DATA",
    "Proposal",
    "ProposalError",
    "RolloutPlan",
    "load_proposals",
]

DEFAULT_PROPOSALS_PATH = Path(__file__).with_name("proposals.json")

CATEGORIES = (
    "automated_decision",
    "content_moderation",
    "data_sharing",
    "infrastructure",
    "model_deployment",
    "policy_change",
    "process_automation",
    "research",
    "vendor_contract",
)
DATA_CATEGORIES = (
    "aggregate",
    "biometric",
    "children",
    "criminal_records",
    "financial",
    "genetic",
    "health",
    "location",
    "personal",
    "pseudonymous",
    "telemetry",
)
# Data that describes identifiable people (principle 2) and the special categories among it
# (principle 3). Aggregate, pseudonymous and telemetry data are treated as non-personal here.
PERSONAL_DATA = frozenset(
    {
        "biometric",
        "children",
        "criminal_records",
        "financial",
        "genetic",
        "health",
        "location",
        "personal",
    }
)
SPECIAL_DATA = frozenset(
    {"biometric", "children", "criminal_records", "financial", "genetic", "health"}
)
CONSENT = ("explicit", "implied", "none", "not_applicable")
AUTOMATION_LEVELS = ("none", "assistive", "partial", "full")
RISK_LEVELS = ("low", "medium", "high", "critical")
ROLLOUT_STRATEGIES = ("none", "pilot", "canary", "staged", "big_bang")


class ProposalError(ValueError):
    """A proposals file that cannot be used; the message names the entry and the field."""


@dataclass(frozen=True)
class RolloutPlan:
    """How a change reaches production: strategy, how many regions and hosts, a way back."""

    strategy: str
    regions: int
    hosts: int
    rollback: bool


@dataclass(frozen=True)
class Proposal:
    """One proposal put to the board; the fields are what the reviewers' rules read."""

    id: str
    title: str
    description: str
    category: str
    data_categories: tuple[str, ...]
    consent: str
    third_party_sharing: bool
    security_review: bool
    affects_people: int
    automation_level: str
    risk_level: str
    jurisdiction: tuple[str, ...]
    has_human_review: bool
    bias_tested: bool
    notifies_affected: bool
    owner: str | None
    budget: float
    retention_days: int | None
    rollout_plan: RolloutPlan

    @property
    def text(self) -> str:
        """Title and description in lower case, for keyword rules."""
        return f"{self.title} {self.description}".lower()

    @property
    def personal_data(self) -> frozenset[str]:
        return PERSONAL_DATA.intersection(self.data_categories)

    @property
    def special_data(self) -> frozenset[str]:
        return SPECIAL_DATA.intersection(self.data_categories)

    @property
    def complexity(self) -> float:
        """A 0..1 score of how much there is to review, recorded on the session span."""
        score = (
            RISK_LEVELS.index(self.risk_level) / 3
            + AUTOMATION_LEVELS.index(self.automation_level) / 3
            + min(len(self.personal_data), 3) / 3
            + min(len(self.jurisdiction) - 1, 3) / 3
        )
        return round(score / 4, 3)


def load_proposals(path: str | Path | None = None) -> list[Proposal]:
    """Read and validate a proposals file (a JSON array of objects).

    Args:
        path: the file; the bundled `proposals.json` when None.

    Raises:
        ProposalError: (a ValueError) the file is not JSON or not an array, or an entry is
            malformed; the message names the entry's index, its id when it has one, the field
            and what was wrong with it.
    """
    path = Path(path) if path is not None else DEFAULT_PROPOSALS_PATH
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ProposalError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ProposalError(f"{path}: expected a JSON array of proposals, got {_kind(raw)}")

    proposals: list[Proposal] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw):
        proposal = _parse(entry, _Where(path, index, entry))
        if proposal.id in seen:
            raise ProposalError(
                f"{path}: entry {index}: id {proposal.id!r} repeats entry {seen[proposal.id]}"
            )
        seen[proposal.id] = index
        proposals.append(proposal)
    return proposals


class _Where:
    """Builds error messages that point at one entry of the file."""

    def __init__(self, path: Path, index: int, entry: Any) -> None:
        self.path = path
        self.index = index
        entry_id = entry.get("id") if isinstance(entry, Mapping) else None
        self.label = f"entry {index}" + (f" ({entry_id!r})" if isinstance(entry_id, str) else "")

    def error(self, field: str, problem: str) -> ProposalError:
        return ProposalError(f"{self.path}: {self.label}: field {field!r} {problem}")


def _parse(entry: Any, where: _Where) -> Proposal:
    if not isinstance(entry, Mapping):
        raise ProposalError(f"{where.path}: {where.label}: expected an object, got {_kind(entry)}")

    def get(field: str, check: Callable[[Any], bool], expected: str, source: Any = entry) -> Any:
        name = field if source is entry else f"rollout_plan.{field}"
        if field not in source:
            raise where.error(name, "is missing")
        value = source[field]
        if not check(value):
            raise where.error(name, f"must be {expected}, got {value!r}")
        return value

    def one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
        return lambda value: value in choices

    def text(value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def flag(value: Any) -> bool:
        return isinstance(value, bool)

    plan = get("rollout_plan", lambda v: isinstance(v, Mapping), "an object")
    return Proposal(
        id=get("id", text, "a non-empty string"),
        title=get("title", text, "a non-empty string"),
        description=get("description", text, "a non-empty string"),
        category=get("category", one_of(CATEGORIES), f"one of {', '.join(CATEGORIES)}"),
        data_categories=tuple(
            get(
                "data_categories",
                lambda v: isinstance(v, list) and all(item in DATA_CATEGORIES for item in v),
                f"a list of {', '.join(DATA_CATEGORIES)}",
            )
        ),
        consent=get("consent", one_of(CONSENT), f"one of {', '.join(CONSENT)}"),
        third_party_sharing=get("third_party_sharing", flag, "true or false"),
        security_review=get("security_review", flag, "true or false"),
        affects_people=get("affects_people", count, "a whole number >= 0"),
        automation_level=get(
            "automation_level", one_of(AUTOMATION_LEVELS), f"one of {', '.join(AUTOMATION_LEVELS)}"
        ),
        risk_level=get("risk_level", one_of(RISK_LEVELS), f"one of {', '.join(RISK_LEVELS)}"),
        jurisdiction=tuple(
            get(
                "jurisdiction",
                lambda v: isinstance(v, list) and bool(v) and all(text(item) for item in v),
                "a non-empty list of jurisdiction codes",
            )
        ),
        has_human_review=get("has_human_review", flag, "true or false"),
        bias_tested=get("bias_tested", flag, "true or false"),
        notifies_affected=get("notifies_affected", flag, "true or false"),
        owner=get("owner", lambda v: v is None or text(v), "a name or null"),
        budget=float(
            get(
                "budget",
                lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                "a number >= 0",
            )
        ),
        retention_days=get(
            "retention_days", lambda v: v is None or count(v), "a whole number of days or null"
        ),
        rollout_plan=RolloutPlan(
            strategy=get(
                "strategy",
                one_of(ROLLOUT_STRATEGIES),
                f"one of {', '.join(ROLLOUT_STRATEGIES)}",
                plan,
            ),
            regions=get("regions", count, "a whole number >= 0", plan),
            hosts=get("hosts", count, "a whole number >= 0", plan),
            rollback=get("rollback", flag, "true or false", plan),
        ),
    )


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else repr(value)

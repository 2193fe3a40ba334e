"""The constitutional checks: plain functions from a proposal to a finding (or None).

They know nothing about tracing; the coordinator runs each inside `session.policy_check(...)`
and the ethics reviewer runs `fairness` through `@agent_trace.track_constitutional_compliance`.

A finding's `enforcement` says what the coordinator does with it:

- `block`: the proposal may not go ahead; the coordinator raises
  `ConstitutionalViolationError` and the session ends `blocked`.
- `escalate`: the constitution wants a person to decide; the session goes to human review.
- `warn`: recorded as a violation (data on the check span); the review goes on and the
  reviewers weigh it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .constitution import Constitution
from .proposals import Proposal

__all__ = ["SCREENING", "Finding", "fairness", "mentions"]

# Words too common to tell one prohibited use from another.
_STOP_WORDS = frozenset({"the", "of", "and", "for", "with", "from", "into", "their"})
_STEM = 5


@dataclass(frozen=True)
class Finding:
    """A violation found by a check.

    It also answers `track_constitutional_compliance`, which reads `compliant`,
    `violation_type`, `severity` and `enforcement` from a check's return value.
    """

    policy: str
    violation_type: str
    severity: str
    enforcement: str
    principle: int
    message: str

    compliant = False


def mentions(text: str, phrase: str) -> bool:
    """Whether every significant word of `phrase` appears in `text`, matched on its stem.

    A stem is the first five letters, so "scoring" matches "scoring" and "scores" does not;
    "criminality" matches "criminal". Crude, but predictable, which a reviewer's rule should be.
    """
    words = {word.strip(".,;:()\"'").lower() for word in text.split()}
    for term in phrase.lower().split():
        if len(term) < 4 or term in _STOP_WORDS:
            continue
        stem = term[:_STEM]
        if not any(word.startswith(stem) for word in words):
            return False
    return True


def harm(proposal: Proposal, constitution: Constitution) -> Finding | None:
    """Principle 1: the uses the constitution prohibits outright, matched in the text."""
    for use, principle in constitution.prohibited_uses:
        if mentions(proposal.text, use):
            return Finding(
                policy="harm",
                violation_type="prohibited_use",
                severity="critical",
                enforcement="block",
                principle=principle,
                message=f"describes {use}, a use {constitution.cite(principle)} prohibits",
            )
    return None


def privacy(proposal: Proposal, constitution: Constitution) -> Finding | None:
    """Principles 2 and 3: personal data shared with third parties needs explicit consent."""
    if not (proposal.personal_data and proposal.third_party_sharing):
        return None
    if proposal.consent == "explicit":
        return None

    if proposal.special_data:
        kinds = ", ".join(sorted(proposal.special_data))
        return Finding(
            policy="privacy",
            violation_type="special_category_data",
            severity="critical",
            enforcement="block",
            principle=3,
            message=f"shares {kinds} data with third parties on {proposal.consent} consent "
            f"({constitution.cite(3)})",
        )
    return Finding(
        policy="privacy",
        violation_type="personal_data_without_consent",
        severity="high",
        enforcement="block",
        principle=2,
        message=f"shares personal data with third parties on {proposal.consent} consent "
        f"({constitution.cite(2)})",
    )


def legality(proposal: Proposal, constitution: Constitution) -> Finding | None:
    """Principle 7: remote biometric identification is unlawful for most uses in the EU."""
    identifies = mentions(proposal.text, "facial recognition") or mentions(
        proposal.text, "biometric identification"
    )
    if "biometric" in proposal.data_categories and "EU" in proposal.jurisdiction and identifies:
        return Finding(
            policy="legality",
            violation_type="unlawful_in_jurisdiction",
            severity="high",
            enforcement="block",
            principle=7,
            message=f"biometric identification of people in the EU ({constitution.cite(7)})",
        )
    return None


def human_oversight(proposal: Proposal, constitution: Constitution) -> Finding | None:
    """Principle 6: a fully automated, high-risk decision about people needs a person."""
    if (
        proposal.automation_level == "full"
        and proposal.affects_people > 0
        and not proposal.has_human_review
        and proposal.risk_level in ("high", "critical")
    ):
        return Finding(
            policy="human_oversight",
            violation_type="no_human_oversight",
            severity="high",
            enforcement="escalate",
            principle=6,
            message=f"fully automated {proposal.risk_level}-risk decisions about "
            f"{proposal.affects_people:,} people with no human review ({constitution.cite(6)})",
        )
    return None


def transparency(proposal: Proposal, constitution: Constitution) -> Finding | None:
    """Principle 5: people subject to automated decisions are told."""
    automated = proposal.automation_level in ("partial", "full")
    if automated and proposal.affects_people > 0 and not proposal.notifies_affected:
        return Finding(
            policy="transparency",
            violation_type="missing_notice",
            severity="low",
            enforcement="warn",
            principle=5,
            message=f"people are not told decisions are automated ({constitution.cite(5)})",
        )
    return None


def accountability(proposal: Proposal, constitution: Constitution) -> Finding | None:
    """Principle 8: somebody owns it."""
    if proposal.owner is None:
        return Finding(
            policy="accountability",
            violation_type="no_accountable_owner",
            severity="medium",
            enforcement="warn",
            principle=8,
            message=f"no named owner ({constitution.cite(8)})",
        )
    return None


def fairness(proposal: Proposal, constitution: Constitution) -> Finding | None:
    """Principle 4: automated decisions about people are bias-tested first.

    Not part of the screening: the ethics reviewer runs it during its own review.
    """
    automated = proposal.automation_level in ("partial", "full")
    if automated and proposal.affects_people > 0 and not proposal.bias_tested:
        return Finding(
            policy="fairness",
            violation_type="untested_bias",
            severity="medium",
            enforcement="warn",
            principle=4,
            message=f"automated decisions about people, no bias test ({constitution.cite(4)})",
        )
    return None


Check = Callable[[Proposal, Constitution], "Finding | None"]

# The screening the coordinator runs before any reviewer sees a proposal, in this order; the
# first blocking finding stops it.
SCREENING: tuple[tuple[str, Check], ...] = (
    ("harm", harm),
    ("privacy", privacy),
    ("legality", legality),
    ("human_oversight", human_oversight),
    ("transparency", transparency),
    ("accountability", accountability),
)

"""The governance example's constitution: its hash, its principles, and a stale hash refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from examples.governance_review import DEFAULT_CONSTITUTION_PATH, load_constitution
from examples.governance_review.checks import harm
from examples.governance_review.proposals import load_proposals


def test_hash_is_the_first_16_hex_digits_of_the_files_sha256() -> None:
    expected = hashlib.sha256(DEFAULT_CONSTITUTION_PATH.read_bytes()).hexdigest()[:16]

    assert load_constitution().hash == expected


def test_any_edit_changes_the_hash(tmp_path: Path) -> None:
    edited = tmp_path / "constitution.txt"
    edited.write_bytes(DEFAULT_CONSTITUTION_PATH.read_bytes().replace(b"harm", b"hurt", 1))

    assert load_constitution(edited).hash != load_constitution().hash


def test_bundled_constitution_has_twelve_numbered_principles() -> None:
    constitution = load_constitution()

    assert sorted(constitution.principles) == list(range(1, 13))
    assert constitution.cite(2) == "P2 (Protect privacy)"
    # A principle that runs over several lines is joined into one.
    assert "can be rolled back by a tested procedure" in constitution.principles[9]


def test_configured_hash_that_matches_is_accepted_whatever_its_case() -> None:
    actual = load_constitution().hash

    assert load_constitution(expected_hash=f" {actual.upper()} ").hash == actual


def test_configured_hash_that_does_not_match_is_refused_with_both_hashes_and_the_fix() -> None:
    actual = load_constitution().hash
    stale = "0123456789abcdef"

    with pytest.raises(ValueError) as refused:
        load_constitution(expected_hash=stale)

    message = str(refused.value)
    assert stale in message
    assert actual in message
    assert "CONSTITUTIONAL_HASH" in message
    assert str(DEFAULT_CONSTITUTION_PATH) in message


def test_principles_out_of_order_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "constitution.txt"
    broken.write_text("Preamble.\n1. Be kind.\n3. Be quick.\n", encoding="utf-8")

    with pytest.raises(ValueError, match="principle 3 found where 2 was expected"):
        load_constitution(broken)


def test_a_file_without_principles_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "constitution.txt"
    empty.write_text("Only a preamble.\n", encoding="utf-8")

    with pytest.raises(ValueError, match="no numbered principles"):
        load_constitution(empty)


def test_prohibited_uses_are_read_from_the_text_so_editing_it_changes_the_harm_check(
    tmp_path: Path,
) -> None:
    proposal = next(
        p for p in load_proposals() if p.title == "Update the travel and expense policy"
    )
    bundled = load_constitution()
    assert ("social scoring", 1) in bundled.prohibited_uses
    assert harm(proposal, bundled) is None

    stricter = tmp_path / "constitution.txt"
    text = DEFAULT_CONSTITUTION_PATH.read_text(encoding="utf-8")
    stricter.write_text(
        text.replace(
            "Prohibited uses: social scoring;", "Prohibited uses: rail travel; social scoring;"
        ),
        encoding="utf-8",
    )
    edited = load_constitution(stricter)

    finding = harm(proposal, edited)
    assert finding is not None
    assert finding.violation_type == "prohibited_use"
    assert finding.enforcement == "block"
    assert edited.hash != bundled.hash

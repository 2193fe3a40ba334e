"""The governance example's proposals file: valid as shipped, malformed entries pinpointed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from examples.governance_review import DEFAULT_PROPOSALS_PATH, ProposalError, load_proposals


def bundled_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(DEFAULT_PROPOSALS_PATH.read_text(encoding="utf-8"))
    return entries


def write(tmp_path: Path, entries: Any) -> Path:
    path = tmp_path / "proposals.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def test_bundled_file_holds_at_least_40_valid_proposals_with_unique_ids() -> None:
    proposals = load_proposals()

    assert len(proposals) >= 40
    assert len({p.id for p in proposals}) == len(proposals)
    assert len(proposals) == len(bundled_entries())


def test_bundled_proposals_vary_in_what_the_rules_read() -> None:
    proposals = load_proposals()

    assert len({p.category for p in proposals}) >= 8
    assert {p.risk_level for p in proposals} == {"low", "medium", "high", "critical"}
    assert {p.automation_level for p in proposals} == {"none", "assistive", "partial", "full"}
    assert any(p.third_party_sharing and p.personal_data for p in proposals)
    assert any(p.owner is None for p in proposals)


def test_a_bad_value_is_reported_with_the_entry_index_id_and_field(tmp_path: Path) -> None:
    entries = bundled_entries()
    entries[7]["risk_level"] = "extreme"

    with pytest.raises(ProposalError) as error:
        load_proposals(write(tmp_path, entries))

    message = str(error.value)
    assert "entry 7" in message
    assert repr(entries[7]["id"]) in message
    assert "'risk_level'" in message
    assert "'extreme'" in message


def test_a_missing_field_is_reported(tmp_path: Path) -> None:
    entries = bundled_entries()
    del entries[3]["affects_people"]

    with pytest.raises(ProposalError, match=r"entry 3 .*field 'affects_people' is missing"):
        load_proposals(write(tmp_path, entries))


def test_a_bad_rollout_field_is_reported_with_its_path(tmp_path: Path) -> None:
    entries = bundled_entries()
    entries[0]["rollout_plan"]["hosts"] = -5

    with pytest.raises(ProposalError, match=r"entry 0 .*'rollout_plan.hosts' must be"):
        load_proposals(write(tmp_path, entries))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("affects_people", True),
        ("budget", "a lot"),
        ("data_categories", ["personal", "gossip"]),
        ("jurisdiction", []),
        ("owner", ""),
    ],
)
def test_wrong_types_are_refused(tmp_path: Path, field: str, value: Any) -> None:
    entries = bundled_entries()
    entries[1][field] = value

    with pytest.raises(ProposalError, match=f"entry 1 .*field '{field}'"):
        load_proposals(write(tmp_path, entries))


def test_an_entry_that_is_not_an_object_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ProposalError, match="entry 1: expected an object"):
        load_proposals(write(tmp_path, [bundled_entries()[0], "GR-999"]))


def test_a_repeated_id_is_reported_with_both_entries(tmp_path: Path) -> None:
    entries = bundled_entries()
    entries[5]["id"] = entries[2]["id"]

    with pytest.raises(ProposalError, match=r"entry 5: id .* repeats entry 2"):
        load_proposals(write(tmp_path, entries))


def test_a_file_that_is_not_a_json_array_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProposalError, match="expected a JSON array"):
        load_proposals(write(tmp_path, {"proposals": []}))

    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "GR-1",', encoding="utf-8")
    with pytest.raises(ProposalError, match="not valid JSON"):
        load_proposals(broken)

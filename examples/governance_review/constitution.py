"""The constitution: numbered principles in a text file, identified by a hash of its bytes.

The hash (first 16 hex digits of the SHA-256 of the file) is what every span carries as
`agent_trace.constitution.hash`, so a trace always says which version of the rules judged it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

__all__ = ["DEFAULT_CONSTITUTION_PATH", "Constitution", "constitution_hash", "load_constitution"]

DEFAULT_CONSTITUTION_PATH = Path(__file__).with_name("constitution.txt")

_PRINCIPLE_START = re.compile(r"^(\d+)\.\s+(.*)$")
_PROHIBITED = re.compile(r"Prohibited uses:\s*(.+?)\.?$")


@dataclass(frozen=True)
class Constitution:
    """A loaded constitution.

    Attributes:
        path: where it was read from.
        hash: first 16 hex digits of the SHA-256 of the file's bytes.
        principles: principle number -> its full text, on one line.
        prohibited_uses: the phrases listed after "Prohibited uses:", lower case, with the
            number of the principle that lists them.
    """

    path: Path
    hash: str
    principles: Mapping[int, str]
    prohibited_uses: tuple[tuple[str, int], ...]

    def title(self, number: int) -> str:
        """The principle's first sentence, e.g. "Be fair"."""
        return self.principles[number].split(".", 1)[0]

    def cite(self, number: int) -> str:
        """How reasons refer to a principle: `P4 (Be fair)`."""
        return f"P{number} ({self.title(number)})"


def constitution_hash(data: bytes) -> str:
    """The constitutional hash of a file's bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def load_constitution(
    path: str | Path | None = None, expected_hash: str | None = None
) -> Constitution:
    """Read and parse a constitution, refusing one whose hash is not the configured one.

    Args:
        path: the text file; the bundled `constitution.txt` when None.
        expected_hash: the hash configured for this deployment (for example from
            `CONSTITUTIONAL_HASH`); None accepts whatever the file hashes to.

    Raises:
        ValueError: the file does not hash to `expected_hash`, or has no principles, or its
            principles are not numbered 1, 2, 3... in order.

    Example:
        >>> constitution = load_constitution()
        >>> constitution.cite(6)
        'P6 (Keep humans in charge)'
    """
    path = Path(path) if path is not None else DEFAULT_CONSTITUTION_PATH
    data = path.read_bytes()
    actual = constitution_hash(data)

    if expected_hash is not None:
        expected = expected_hash.strip().lower()
        if expected != actual:
            raise ValueError(
                f"constitution {path} hashes to {actual}, but the configured constitutional "
                f"hash is {expected_hash!r}: either the file was edited after the hash was "
                f"recorded, or the setting names another constitution. If this file is the "
                f"one to enforce, set the hash (configure(constitution_hash=...) or "
                f"CONSTITUTIONAL_HASH) to {actual}; otherwise restore the file."
            )

    principles = _parse_principles(data.decode("utf-8"), path)
    return Constitution(
        path=path,
        hash=actual,
        principles=MappingProxyType(principles),
        prohibited_uses=_prohibited_uses(principles),
    )


def _parse_principles(text: str, path: Path) -> dict[int, str]:
    """Numbered paragraphs: a line `N. ...` starts principle N, other lines continue it."""
    principles: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        match = _PRINCIPLE_START.match(stripped)
        if match:
            number = int(match.group(1))
            expected = len(principles) + 1
            if number != expected:
                raise ValueError(
                    f"constitution {path}: principle {number} found where {expected} was "
                    f"expected; number the principles 1, 2, 3... in order"
                )
            current = principles[number] = [match.group(2)]
        elif current is not None and stripped:
            current.append(stripped)
        # Lines before principle 1 are the preamble, which binds nothing.

    if not principles:
        raise ValueError(f"constitution {path}: no numbered principles ('1. ...') found")
    return {number: " ".join(parts) for number, parts in principles.items()}


def _prohibited_uses(principles: Mapping[int, str]) -> tuple[tuple[str, int], ...]:
    found: list[tuple[str, int]] = []
    for number, text in principles.items():
        for sentence in re.split(r"(?<=\.)\s+", text):
            match = _PROHIBITED.search(sentence)
            if match:
                found += [(use.strip().lower(), number) for use in match.group(1).split(";")]
    return tuple(use for use in found if use[0])

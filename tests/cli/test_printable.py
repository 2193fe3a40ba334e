"""What the commands print from a trace file: never a control character or a lone surrogate."""

from __future__ import annotations

import pytest

from agent_trace.cli._common import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("vote\x1b]0;owned\x07", "vote\\x1b]0;owned\\x07"),
        ("a\nb\tc\rd\x00", "a\\x0ab\\x09c\\x0dd\\x00"),
        ("del\x7f csi\x9b nel\x85", "del\\x7f csi\\x9b nel\\x85"),
        ("abc\u202edef\u2066", "abc\\u202edef\\u2066"),
        ("review\ud800 \udcff", "review\\ud800 \\udcff"),
    ],
    ids=["esc and bel", "c0 layout", "del and c1", "bidi overrides", "lone surrogates"],
)
def test_unprintable_characters_become_escapes(text: str, shown: str) -> None:
    assert printable(text) == shown
    shown.encode("ascii")


@pytest.mark.parametrize("text", ["", "ethics", "légal 審査 ✓ µs", "C:\\path\\x1b", "│├└─█"])
def test_printable_text_is_returned_unchanged(text: str) -> None:
    assert printable(text) is text

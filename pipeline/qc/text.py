"""Text from the input, drawn by matplotlib as the characters it holds: never as markup.

matplotlib parses a string with an even number of unescaped ``$`` as mathtext (and hands every
string to LaTeX when ``text.usetex`` is set). A patient ID such as ``case $\\frac{$`` then fails to
parse and takes the series' QC picture down with it, and ``$x^2$`` is drawn as a formula. Every
string that comes from a cohort, a table or a DICOM header goes through here before it is drawn:

- :data:`PLAIN` (``parse_math=False, usetex=False``) for a ``Text`` the code creates itself
  (``fig.text``, ``ax.set_title``, ``ax.annotate``), with the string from :func:`plain`;
- :func:`escaped` for strings matplotlib turns into its own ``Text`` objects (legend entries,
  tick labels), where no such property can be passed: each ``$`` escaped, which matplotlib
  draws as a plain ``$`` (it unescapes ``\\$`` in text that is not mathtext).
"""

from __future__ import annotations

import functools
from typing import Any

PLAIN: dict[str, Any] = {"parse_math": False, "usetex": False}
"""Properties of a matplotlib ``Text`` that draws its string literally."""

MAX_CHARS = 120
"""The most characters of one input string drawn (a title line of the QC picture)."""


MISSING = "\ufffd"
"""Drawn for a character the font has no glyph for (matplotlib would draw an empty box and warn)."""


def plain(text: object, *, max_chars: int = MAX_CHARS) -> str:
    """``text`` on one line, at most ``max_chars`` characters: control characters (newlines,
    tabs, escapes) become spaces, characters the font cannot draw become U+FFFD, and a longer
    string is cut with an ellipsis."""
    glyphs = _font_code_points()
    cleaned = "".join((ch if ord(ch) in glyphs else MISSING) if ch.isprintable() else " " for ch in str(text))
    if len(cleaned) > max_chars:
        cleaned = cleaned[: max(0, max_chars - 1)] + "\u2026"
    return cleaned


def escaped(text: object, *, max_chars: int = MAX_CHARS) -> str:
    """:func:`plain` with every ``$`` escaped, for a ``Text`` whose properties matplotlib sets:
    with no unescaped ``$`` left it is not mathtext, and matplotlib draws each ``\\$`` as ``$``."""
    return plain(text, max_chars=max_chars).replace("$", r"\$")


@functools.cache
def _font_code_points() -> frozenset[int]:
    """The characters matplotlib's default font (the one every text here is drawn in) has."""
    from matplotlib import font_manager

    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties()))
    return frozenset(font.get_charmap())

"""Text from the input is drawn as the characters it holds: never parsed as mathtext or TeX.

What matplotlib decides is read where it decides it (``Text._preprocess_math``, called for
every string it lays out), so each test sees exactly the strings drawn and how."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from pipeline.geometry import Geometry
from pipeline.qc.picture import render_qc
from pipeline.qc.text import PLAIN, escaped, plain
from pipeline.report.plots import nodes_per_patient, volume_by_annotation

HOSTILE = [
    r"case $\frac{$",  # unparsable mathtext: a ValueError from matplotlib before
    "case $x^2$",  # parsable: would be drawn as a formula
    "$$",
    r"a\$b$c$",  # escaped and unescaped dollars mixed
    "\\",
    "$\\undefinedcommand{x}$",
    "_^{}$%&#~",
    "two\nlines\tand\x1b[31m escapes $a$",
    "\u65e5\u672c $\u20ac$ \u00e9",
    "$" * 41,
]


@pytest.fixture()
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Every (string, math mode) matplotlib lays out while the test runs."""
    seen: list[tuple[str, object]] = []
    original = Text._preprocess_math

    def spy(self: Text, s: str) -> tuple[str, object]:
        result = original(self, s)
        seen.append(result)
        return result

    monkeypatch.setattr(Text, "_preprocess_math", spy)
    return seen


def _draw(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


@pytest.mark.parametrize("text", HOSTILE)
def test_plain_and_escaped_strings_are_drawn_literally(text: str, drawn: list) -> None:
    fig = Figure(figsize=(4, 2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.text(0.0, 1.0, plain(text), va="top", **PLAIN)
    ax.set_title(plain(text), **PLAIN)
    (line,) = ax.plot([0, 1], [0, 1])
    ax.legend([line], [escaped(text)])
    ax.set_xticks([0.5], [escaped(text)])  # tick labels: matplotlib makes those Text objects itself
    assert _draw(fig).startswith(b"\x89PNG")
    shown = plain(text)
    assert "\n" not in shown and "\x1b" not in shown
    modes = {mode for s, mode in drawn if s == shown}
    assert modes == {False}, drawn  # the literal string, drawn as text, by all four paths
    assert not any(mode for _, mode in drawn)


def test_plain_bounds_what_is_drawn() -> None:
    long = "p" * 10_000
    assert plain(long) == "p" * 119 + "\u2026"
    assert len(plain(long, max_chars=64)) == 64
    assert plain("a\u0000b\u2028c") == "a b c"
    assert plain("\u65e5 \u00e9\u20ac") == "\ufffd \u00e9\u20ac"  # no glyph: a replacement, not a box
    assert escaped(r"\$") == r"\\$"  # matplotlib turns '\$' into '$': the backslash stays


def test_even_a_usetex_setting_does_not_send_input_to_latex(monkeypatch: pytest.MonkeyPatch) -> None:
    """A site matplotlibrc with ``text.usetex: True`` would run LaTeX on the patient ID."""
    import matplotlib

    monkeypatch.setitem(matplotlib.rcParams, "text.usetex", True)
    text = Text(0, 0, plain("$x$"), **PLAIN)
    assert text._preprocess_math(text.get_text()) == ("$x$", False)


def _tiny_series() -> tuple[np.ndarray, Geometry]:
    hu = np.full((6, 32, 32), -100.0, dtype=np.float32)
    hu[2:4, 10:16, 10:16] = 40.0
    geometry = Geometry((6, 32, 32), (0.0, 0.0, 0.0), (1.0, 1.0, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return hu, geometry


@pytest.mark.parametrize("patient_id", HOSTILE)
def test_the_qc_title_draws_the_patient_id_as_it_is(patient_id: str, drawn: list) -> None:
    hu, geometry = _tiny_series()
    labels = (hu > 0).astype(np.int32)
    title = f"{patient_id}  1.2.3"
    picture = render_qc(hu, geometry, reference_labels=labels, prediction_labels=None, nodes=[], title=title)
    assert picture.png.startswith(b"\x89PNG")
    assert (plain(title, max_chars=160), False) in drawn
    assert not any(mode for _, mode in drawn)


def test_report_plots_draw_table_strings_as_they_are(drawn: list) -> None:
    """The report draws annotation values from the tables it reads (a hand-edited table included)."""
    rows = [
        {"patient_id": p, "annotation": a, "n_reference_nodes": 2, "reference_volume_ml": 1.5}
        for p, a in [(r"$\frac{$", r"$\frac{$"), ("b", "full"), ("c", "$x$"), ("d", "_hidden")]
    ]
    for make in (nodes_per_patient, volume_by_annotation):  # legend entries; labels under boxes
        drawn.clear()
        assert make(rows).png.startswith(b"\x89PNG")
        assert not any(mode for _, mode in drawn)
        shown = {s.split("\n")[0] for s, _ in drawn}
        assert {r"$\frac{$", "$x$", "_hidden"} <= shown, (make.__name__, shown)

"""What the cohort plots count: whole-number ticks for counts, specks left out and said so."""

from __future__ import annotations

from collections import Counter

import pytest
from matplotlib.figure import Figure

from pipeline.report import plots
from tests.pipeline.report.synthetic import random_tables


@pytest.fixture()
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure a plot function draws, kept for inspection."""
    figures: list[Figure] = []
    real = plots._png

    def keep(fig: Figure) -> bytes:
        figures.append(fig)
        return real(fig)

    monkeypatch.setattr(plots, "_png", keep)
    return figures


def _ok_rows(model: str = "torchscript:m.pt") -> tuple[list[dict], list[dict]]:
    series, nodes, _ = random_tables(80, model=model, seed=7)
    return [r for r in series.to_pylist() if r["status"] == "ok"], nodes.to_pylist()


def test_count_histograms_have_whole_number_ticks(drawn: list[Figure]) -> None:
    """Nodes per patient had ticks from -0.5 to 3.5."""
    rows, _ = _ok_rows()
    few = [
        dict(rows[0], patient_id=f"case_{i}", annotation="full", n_reference_nodes=i, false_positive_nodes=i)
        for i in range(4)
    ]
    for make, given in (
        (plots.nodes_per_patient, few),
        (plots.false_positives, few),
        (plots.nodes_per_patient, rows),
    ):
        make(given)
        ticks = drawn[-1].axes[0].get_xticks()
        assert len(ticks) >= 2
        assert all(float(t).is_integer() for t in ticks), (make.__name__, ticks)


def test_recist_counts_leave_specks_out_and_say_how_many(drawn: list[Figure]) -> None:
    _, nodes = _ok_rows()
    flags = Counter((n["source"], n["quality_flag"]) for n in nodes)
    assert (
        flags[("prediction", "speck")]
        and flags[("reference", "implausible")] + flags[("prediction", "implausible")]
    )
    plot = plots.recist_categories(nodes)
    n_specks = flags[("reference", "speck")] + flags[("prediction", "speck")]
    assert f"Left out: {n_specks} specks (reference {flags[('reference', 'speck')]}" in plot.caption
    ax = drawn[-1].axes[0]
    labels = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert labels == ["target", "non-target", "normal", "implausible"]
    heights = {
        (container.get_label(), labels[i]): int(bar.get_height())
        for container in ax.containers
        for i, bar in enumerate(container)
    }
    for source in ("reference", "prediction"):
        kept = [n for n in nodes if n["source"] == source and n["quality_flag"] == "ok"]
        assert heights[(source, "target")] == sum(n["recist_category"] == "target" for n in kept)
        assert heights[(source, "normal")] == sum(n["recist_category"] == "normal" for n in kept)
        assert heights[(source, "implausible")] == flags[(source, "implausible")]
    assert sum(heights.values()) == len(nodes) - n_specks


def test_detection_caption_names_the_matching_rule() -> None:
    rows, _ = _ok_rows()
    assert "one to one at IoU >= 0.1" in plots.detection(rows).caption

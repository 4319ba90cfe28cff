"""The report's cohort plots, each a PNG drawn on a private matplotlib ``Figure`` (Agg, no pyplot)."""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from pipeline.enums import DEFAULT_IOU_THRESHOLD, Annotation
from pipeline.measure.categories import PATHOLOGICAL_SHORT_AXIS_MM, TARGET_SHORT_AXIS_MM, RecistCategory
from pipeline.measure.quality import MAX_PLAUSIBLE_SHORT_AXIS_MM, NodeQuality
from pipeline.qc.text import escaped
from pipeline.report.summary import false_positives_per_full_patient, has_model

REFERENCE_COLOUR = "#E69F00"  # Okabe-Ito, as the QC picture
PREDICTION_COLOUR = "#56B4E9"
NEUTRAL_COLOUR = "#555555"
SOURCE_COLOURS = {"reference": REFERENCE_COLOUR, "prediction": PREDICTION_COLOUR}
ANNOTATION_ORDER = tuple(a.value for a in Annotation)


@dataclass(frozen=True)
class Plot:
    file_name: str
    title: str
    caption: str
    png: bytes


def _figure(width: float = 5.0, height: float = 3.2) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts; overridden where values are not
    return fig, ax


def _integer_x(ax: Axes) -> None:
    """Whole-number ticks on x, for counts (a histogram's bins at -0.5 .. n + 0.5 gave fractions)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _flag(node: dict[str, Any]) -> str:
    return node.get("quality_flag") or NodeQuality.OK.value


def _left_out(node_rows: list[dict[str, Any]], flag: NodeQuality) -> str:
    """'3 specks (reference 1, prediction 2)' for the caption, or '' when there are none."""
    counts = Counter(n["source"] for n in node_rows if _flag(n) == flag.value)
    total = sum(counts.values())
    if not total:
        return ""
    noun = {NodeQuality.SPECK: "speck", NodeQuality.IMPLAUSIBLE: "implausible node"}[flag]
    by_source = ", ".join(f"{s} {counts[s]}" for s in ("reference", "prediction") if counts[s])
    return f"{total} {noun}{'s' if total != 1 else ''} ({by_source})"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color=NEUTRAL_COLOUR)
    ax.set_xticks([])
    ax.set_yticks([])


def cohort_plots(series: pa.Table, nodes: pa.Table) -> list[Plot]:
    """Every plot the report shows; model plots only when a model ran."""
    series_rows = [r for r in series.to_pylist() if r["status"] == "ok"]
    node_rows = nodes.to_pylist()
    makers: list[Callable[[], Plot]] = [
        lambda: nodes_per_patient(series_rows),
        lambda: short_axis_histogram(node_rows),
        lambda: volume_by_annotation(series_rows),
        lambda: recist_categories(node_rows),
    ]
    if has_model(series.to_pylist()):
        makers += [
            lambda: dsc_distribution(series_rows),
            lambda: assd_distribution(series_rows),
            lambda: dsc_against_volume(series_rows),
            lambda: detection(series_rows),
            lambda: false_positives(series_rows),
        ]
    return [make() for make in makers]


def nodes_per_patient(rows: list[dict[str, Any]]) -> Plot:
    fig, ax = _figure()
    per_patient: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        per_patient[(r["patient_id"], r["annotation"] or "unknown")] += int(r["n_reference_nodes"] or 0)
    if per_patient:
        top = max(per_patient.values())
        bins = np.arange(-0.5, top + 1.5, 1.0 if top < 40 else math.ceil(top / 40)).tolist()
        groups = sorted({a for _, a in per_patient}, key=_annotation_key)
        data = [[n for (_, a), n in per_patient.items() if a == g] for g in groups]
        colours = [REFERENCE_COLOUR if g == Annotation.FULL else NEUTRAL_COLOUR for g in groups]
        ax.hist(data, bins=bins, stacked=True, color=colours)
        _integer_x(ax)
        ax.set_xlabel("reference nodes per patient")
        ax.set_ylabel("patients")
        # handles and labels given: a label from the table starting with '_' is not dropped
        handles = [Patch(facecolor=c) for c in colours]
        ax.legend(handles, [escaped(g) for g in groups], title="annotation", fontsize=8)
    else:
        _no_data(ax, "processed series")
    return Plot(
        "nodes_per_patient.png", "Nodes per patient", "Expert-segmented nodes per patient.", _png(fig)
    )


def short_axis_histogram(node_rows: list[dict[str, Any]]) -> Plot:
    fig, ax = _figure()
    by_source = {
        s: [
            float(n["short_axis_mm"])
            for n in node_rows
            if n["source"] == s and n["short_axis_mm"] is not None and _flag(n) != NodeQuality.SPECK.value
        ]
        for s in ("reference", "prediction")
    }
    values = [v for vs in by_source.values() for v in vs]
    if values:
        bins = np.arange(0.0, max(values) + 2.0, 1.0).tolist()
        for source, vs in by_source.items():
            if vs:
                ax.hist(
                    vs, bins=bins, histtype="step", linewidth=1.6, color=SOURCE_COLOURS[source], label=source
                )
        for limit, style in ((PATHOLOGICAL_SHORT_AXIS_MM, "--"), (TARGET_SHORT_AXIS_MM, ":")):
            ax.axvline(limit, color="black", linestyle=style, linewidth=1.0, label=f"{limit:g} mm")
        ax.set_xlabel("short axis (mm)")
        ax.set_ylabel("nodes")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "nodes")
    caption = "RECIST short axes; 10 mm: pathological, 15 mm: target."
    specks = _left_out(node_rows, NodeQuality.SPECK)
    if specks:
        caption += f" Left out: {specks}, below the image's resolution."
    return Plot("short_axis.png", "Short-axis histogram", caption, _png(fig))


def _annotation_key(a: str) -> tuple[int, str]:
    return (ANNOTATION_ORDER.index(a) if a in ANNOTATION_ORDER else len(ANNOTATION_ORDER), a)


def volume_by_annotation(rows: list[dict[str, Any]]) -> Plot:
    fig, ax = _figure()
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["reference_volume_ml"] is not None:
            groups[r["annotation"] or "unknown"].append(float(r["reference_volume_ml"]))
    if groups:
        names = sorted(groups, key=_annotation_key)
        ax.yaxis.set_major_locator(MaxNLocator())
        ax.boxplot(
            [groups[n] for n in names], tick_labels=[f"{escaped(n)}\n(n={len(groups[n])})" for n in names]
        )
        rng = np.random.default_rng(0)  # fixed jitter: the same report for the same tables
        for i, n in enumerate(names, start=1):
            ax.scatter(
                i + rng.uniform(-0.12, 0.12, len(groups[n])),
                groups[n],
                s=8,
                color=REFERENCE_COLOUR,
                alpha=0.7,
            )
        ax.set_ylabel("node volume per series (mL)")
    else:
        _no_data(ax, "volumes")
    return Plot("volume_by_annotation.png", "Total node volume by annotation", "Per series.", _png(fig))


def recist_categories(node_rows: list[dict[str, Any]]) -> Plot:
    """Nodes per RECIST category, specks left out (counted in the caption); implausible nodes are
    a bar of their own, not targets."""
    fig, ax = _figure()
    implausible = NodeQuality.IMPLAUSIBLE.value
    categories = [c.value for c in RecistCategory] + [implausible]
    counts = Counter(
        (n["source"], implausible if _flag(n) == implausible else n["recist_category"])
        for n in node_rows
        if _flag(n) != NodeQuality.SPECK.value
    )
    sources = [s for s in ("reference", "prediction") if any(k[0] == s for k in counts)]
    if sources:
        width = 0.8 / len(sources)
        x = np.arange(len(categories))
        for i, s in enumerate(sources):
            heights = [counts[(s, c)] for c in categories]
            bars = ax.bar(
                x + (i - (len(sources) - 1) / 2) * width, heights, width, label=s, color=SOURCE_COLOURS[s]
            )
            ax.bar_label(bars, fontsize=8)
        ax.set_xticks(
            x,
            [
                "target\n>= 15 mm",
                "non-target\n10 to < 15 mm",
                "normal\n< 10 mm",
                f"implausible\n> {MAX_PLAUSIBLE_SHORT_AXIS_MM:g} mm",
            ],
        )
        ax.set_ylabel("nodes")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "nodes")
    caption = "Nodes per category (short axis); implausible: larger than one mediastinal node can be."
    specks = _left_out(node_rows, NodeQuality.SPECK)
    caption += f" Left out: {specks}, below the image's resolution." if specks else " No specks left out."
    return Plot("recist_categories.png", "RECIST categories", caption, _png(fig))


def _distribution(
    values: list[float], *, xlabel: str, bins: Any, title: str, file_name: str, caption: str
) -> Plot:
    fig, ax = _figure()
    if values:
        ax.hist(values, bins=bins, color=PREDICTION_COLOUR, edgecolor="white")
        median, mean = float(np.median(values)), float(np.mean(values))
        ax.axvline(median, color="black", linestyle="--", label=f"median {median:.3g}")
        ax.axvline(mean, color="black", linestyle=":", label=f"mean {mean:.3g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("series")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "scored series")
    return Plot(file_name, title, caption, _png(fig))


def dsc_distribution(rows: list[dict[str, Any]]) -> Plot:
    values = [float(r["dsc"]) for r in rows if r["dsc"] is not None]
    caption = "LNQ2023 DSC per series (an empty prediction scores 0)."
    return _distribution(
        values,
        xlabel="DSC",
        bins=np.linspace(0, 1, 21).tolist(),
        title="DSC",
        file_name="dsc.png",
        caption=caption,
    )


def assd_distribution(rows: list[dict[str, Any]]) -> Plot:
    values = [float(r["assd_mm"]) for r in rows if r["dsc"] is not None and r["assd_mm"] is not None]
    n_nan = sum(1 for r in rows if r["dsc"] is not None and r["assd_mm"] is None)
    caption = f"LNQ2023 ASSD per series; {n_nan} empty predictions (ASSD NaN) left out."
    return _distribution(
        values, xlabel="ASSD (mm)", bins=20, title="ASSD", file_name="assd.png", caption=caption
    )


def dsc_against_volume(rows: list[dict[str, Any]]) -> Plot:
    fig, ax = _figure()
    points = [
        (float(r["reference_volume_ml"]), float(r["dsc"]))
        for r in rows
        if r["dsc"] is not None and r["reference_volume_ml"] is not None and r["reference_volume_ml"] > 0
    ]
    if points:
        xy = np.array(points)
        ax.scatter(
            xy[:, 0], xy[:, 1], s=12, color=PREDICTION_COLOUR, edgecolors=NEUTRAL_COLOUR, linewidths=0.4
        )
        ax.set_xscale("log")
        ax.yaxis.set_major_locator(MaxNLocator())
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("reference volume (mL, log scale)")
        ax.set_ylabel("DSC")
    else:
        _no_data(ax, "scored series")
    return Plot("dsc_vs_volume.png", "DSC against reference volume", "One point per series.", _png(fig))


def detection(rows: list[dict[str, Any]]) -> Plot:
    fig, ax = _figure()
    n_ref = sum(int(r["n_reference_nodes_short_axis_ge_10mm"] or 0) for r in rows if r["dsc"] is not None)
    n_hit = sum(int(r["n_reference_nodes_ge_10mm_detected"] or 0) for r in rows if r["dsc"] is not None)
    if n_ref:
        bars = ax.bar(
            ["detected", "missed"], [n_hit, n_ref - n_hit], color=[PREDICTION_COLOUR, NEUTRAL_COLOUR]
        )
        ax.bar_label(bars)
        ax.set_ylabel("reference nodes, short axis >= 10 mm")
        ax.set_title(f"sensitivity {n_hit / n_ref:.1%} ({n_hit} of {n_ref})", fontsize=10)
    else:
        _no_data(ax, "reference nodes >= 10 mm")
    thresholds = sorted(
        {float(r["detection_iou_threshold"]) for r in rows if r.get("detection_iou_threshold")}
    )
    iou = ", ".join(f"{t:g}" for t in thresholds) or f"{DEFAULT_IOU_THRESHOLD:g}"
    caption = (
        f"Predicted and reference nodes matched one to one at IoU >= {iou}: "
        "one predicted node detects at most one reference node."
    )
    return Plot("detection.png", "Detection of nodes >= 10 mm", caption, _png(fig))


def false_positives(rows: list[dict[str, Any]]) -> Plot:
    fig, ax = _figure()
    counts = false_positives_per_full_patient(rows)
    if counts:
        ax.hist(
            counts,
            bins=np.arange(-0.5, max(counts) + 1.5, 1.0).tolist(),
            color=PREDICTION_COLOUR,
            edgecolor="white",
        )
        ax.axvline(float(np.mean(counts)), color="black", linestyle=":", label=f"mean {np.mean(counts):.2f}")
        _integer_x(ax)
        ax.set_xlabel("false-positive nodes per patient")
        ax.set_ylabel("fully annotated patients")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "fully annotated patients")
    caption = (
        "Predicted nodes matched to no reference node; counted only for full annotations "
        "(a partial one does not say what is absent)."
    )
    return Plot("false_positives.png", "False positives per fully annotated patient", caption, _png(fig))

"""The per-series QC picture: the largest nodes on their measurement slices, outlined and measured.

A reader checks a series at a glance: expert outline against the model's, the RECIST axes the
``nodes`` table reports, where the nodes sit in the chest. The model's outline is drawn solid and
the expert's dashed on top of it, so that where the two agree both stay visible. Specks (nodes
flagged ``speck``, below the image's resolution: ``pipeline.measure.quality``) get no panel and no
mark; the picture says how many were left out. Drawn with matplotlib's Agg canvas on a
private ``Figure`` (no pyplot state), so workers can draw in threads and equal inputs give equal
bytes. Each axial panel shows a square field of view around one node, in voxel index coordinates,
so :class:`Panel` can say where any voxel landed in the PNG (what the content tests check).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.geometry import Geometry
from pipeline.measure.quality import NodeQuality
from pipeline.qc.orientation import physical_to_index, screen_letters
from pipeline.qc.text import PLAIN, plain

REFERENCE_COLOUR = "#E69F00"  # Okabe-Ito orange
PREDICTION_COLOUR = "#56B4E9"  # Okabe-Ito sky blue
AXIS_COLOUR = "#F0E442"  # Okabe-Ito yellow
DASHES = (0, (2.5, 2.0))  # the expert's outline: dashes over the model's solid line
PREDICTION_STYLE: dict[str, Any] = {"colors": [PREDICTION_COLOUR], "linewidths": 2.4}
REFERENCE_STYLE: dict[str, Any] = {"colors": [REFERENCE_COLOUR], "linewidths": 1.6, "linestyles": [DASHES]}
SPECK = NodeQuality.SPECK.value  # as the nodes table writes them
IMPLAUSIBLE = NodeQuality.IMPLAUSIBLE.value
WINDOW_WIDTH_HU = 350.0
WINDOW_LEVEL_HU = 40.0
MAX_PANELS = 4
MIN_FIELD_OF_VIEW_MM = 60.0
FIELD_OF_VIEW_PER_LONG_AXIS = 2.5
PANEL_INCHES = 2.6
DPI = 100
AIR_HU = -1024.0
TITLE_CHARS = 160


@dataclass(frozen=True)
class Panel:
    """One axial panel as drawn: which node, which slice, and where its pixels went.

    ``index_to_png`` maps homogeneous voxel indices ``(x, y, 1)`` of ``slice_index`` to PNG
    ``(column, row)`` pixel coordinates (row 0 at the top). Axis end points are in PNG pixels.
    """

    node_index: int
    source: str
    slice_index: int
    index_to_png: np.ndarray
    box_png: tuple[float, float, float, float]
    long_axis_png: tuple[tuple[float, float], tuple[float, float]] | None
    short_axis_png: tuple[tuple[float, float], tuple[float, float]] | None
    long_axis_label: str | None
    short_axis_label: str | None
    letters: dict[str, str]


@dataclass(frozen=True)
class QcPicture:
    """The PNG and what each axial panel shows."""

    png: bytes
    panels: tuple[Panel, ...]
    size_px: tuple[int, int]


def qc_png(
    hu: np.ndarray,
    geometry: Geometry,
    *,
    reference_labels: np.ndarray | None,
    prediction_labels: np.ndarray | None,
    nodes: Sequence[Mapping[str, Any]],
    title: str | None = None,
) -> bytes:
    """The QC picture of one series as PNG bytes (see :func:`render_qc`)."""
    return render_qc(
        hu,
        geometry,
        reference_labels=reference_labels,
        prediction_labels=prediction_labels,
        nodes=nodes,
        title=title,
    ).png


def render_qc(
    hu: np.ndarray,
    geometry: Geometry,
    *,
    reference_labels: np.ndarray | None,
    prediction_labels: np.ndarray | None,
    nodes: Sequence[Mapping[str, Any]],
    title: str | None = None,
    max_panels: int = MAX_PANELS,
) -> QcPicture:
    """Draw the QC picture: axial panels through the largest nodes (reference nodes first, the
    prediction's when there is no reference) and a coronal thumbnail with node positions.

    ``nodes`` are rows shaped like the ``nodes`` table, plus ``long_axis_endpoints_mm`` and
    ``short_axis_endpoints_mm`` (patient LPS end points) when the axes should be drawn.
    """
    for name, labels in (("reference", reference_labels), ("prediction", prediction_labels)):
        if labels is not None and labels.shape != hu.shape:
            raise ValueError(f"{name} labels shape {labels.shape} does not match HU {hu.shape}")
    if tuple(hu.shape) != tuple(geometry.size_zyx):
        raise ValueError(f"HU shape {hu.shape} does not match grid {geometry.size_zyx}")
    n_specks = sum(1 for n in nodes if n.get("quality_flag") == SPECK)
    nodes = [n for n in nodes if n.get("quality_flag") != SPECK]
    shown = _panel_nodes(nodes, max_panels)
    n_axial = max(len(shown), 1)
    fig = Figure(figsize=((n_axial + 1) * PANEL_INCHES, PANEL_INCHES + 0.7), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    width = 1.0 / (n_axial + 1)
    bottom, height = 0.14, PANEL_INCHES / (PANEL_INCHES + 0.7) * 0.86
    drawn: list[tuple[Axes, dict[str, Any], int, dict[str, str], Any, Any]] = []
    for i in range(n_axial):
        ax = fig.add_axes((i * width + 0.01 * width, bottom, 0.98 * width, height))
        if shown:
            drawn.append(_draw_axial(ax, hu, geometry, reference_labels, prediction_labels, shown[i]))
        else:
            _draw_empty(ax, hu, geometry, n_specks)
    coronal = fig.add_axes((n_axial * width + 0.01 * width, bottom, 0.98 * width, height))
    _draw_coronal(coronal, hu, geometry, nodes, shown)
    _legend(fig, reference_labels is not None, prediction_labels is not None)
    if title:
        fig.text(0.005, 0.985, plain(title, max_chars=TITLE_CHARS), ha="left", va="top", fontsize=8, **PLAIN)
    if n_specks:
        note = f"{n_specks} speck{'s' if n_specks != 1 else ''} (under 8 voxels or a pixel thin) not shown"
        fig.text(0.995, 0.985, note, ha="right", va="top", fontsize=7, color="#555555", **PLAIN)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # draws once; transforms final
    width_px, height_px = canvas.get_width_height()
    panels = tuple(_panel_record(height_px, *entry) for entry in drawn)
    return QcPicture(png=buffer.getvalue(), panels=panels, size_px=(width_px, height_px))


def nodes_for_qc(measurements: Sequence[Any], source: str) -> list[dict[str, Any]]:
    """Node dicts as :func:`render_qc` reads them, from ``NodeMeasurement`` records."""
    return [
        {
            "node_index": m.node_index,
            "source": source,
            "long_axis_mm": m.long_axis_mm,
            "short_axis_mm": m.short_axis_mm,
            "measurement_slice_z_mm": m.measurement_slice_z_mm,
            "centroid_x_mm": m.centroid_mm[0],
            "centroid_y_mm": m.centroid_mm[1],
            "centroid_z_mm": m.centroid_mm[2],
            "long_axis_endpoints_mm": m.long_axis_endpoints_mm,
            "short_axis_endpoints_mm": m.short_axis_endpoints_mm,
            "quality_flag": str(m.quality_flag),
        }
        for m in measurements
    ]


def _panel_nodes(nodes: Sequence[Mapping[str, Any]], max_panels: int) -> list[dict[str, Any]]:
    """The largest nodes to show: reference nodes by index (1 = largest), else prediction nodes."""
    for source in ("reference", "prediction"):
        chosen = sorted((dict(n) for n in nodes if n.get("source") == source), key=lambda n: n["node_index"])
        if chosen:
            return chosen[:max_panels]
    return []


def _window(pixels: np.ndarray) -> dict[str, Any]:
    low = WINDOW_LEVEL_HU - WINDOW_WIDTH_HU / 2.0
    return {"cmap": "gray", "vmin": low, "vmax": low + WINDOW_WIDTH_HU, "interpolation": "nearest"}


def _node_slice_and_centre(node: Mapping[str, Any], geometry: Geometry) -> tuple[int, float, float]:
    """Measurement slice index and in-slice centre (x, y indices) of a node."""
    ends = node.get("long_axis_endpoints_mm")
    if ends is not None:
        index = physical_to_index(geometry, np.asarray(ends, dtype=float))
        centre = index.mean(axis=0)
    else:
        point = [node["centroid_x_mm"], node["centroid_y_mm"], node["measurement_slice_z_mm"]]
        centre = physical_to_index(geometry, np.asarray(point, dtype=float))[0]
    k = int(np.clip(round(float(centre[0])), 0, geometry.size_zyx[0] - 1))
    return k, float(centre[2]), float(centre[1])


def _crop(image: np.ndarray, y0: int, y1: int, x0: int, x1: int, fill: float) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` padded with ``fill`` where the window leaves the image."""
    out = np.full((y1 - y0, x1 - x0), fill, dtype=np.float32)
    ny, nx = image.shape
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
    if sy0 < sy1 and sx0 < sx1:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def _draw_axial(
    ax: Axes,
    hu: np.ndarray,
    geometry: Geometry,
    reference_labels: np.ndarray | None,
    prediction_labels: np.ndarray | None,
    node: dict[str, Any],
) -> tuple[Axes, dict[str, Any], int, dict[str, str], Any, Any]:
    sx, sy = float(geometry.spacing_mm[0]), float(geometry.spacing_mm[1])
    k, cx, cy = _node_slice_and_centre(node, geometry)
    fov_mm = max(MIN_FIELD_OF_VIEW_MM, FIELD_OF_VIEW_PER_LONG_AXIS * float(node.get("long_axis_mm") or 0.0))
    hx, hy = int(np.ceil(fov_mm / 2.0 / sx)), int(np.ceil(fov_mm / 2.0 / sy))
    x0, x1 = int(round(cx)) - hx, int(round(cx)) + hx + 1
    y0, y1 = int(round(cy)) - hy, int(round(cy)) + hy + 1
    extent = (x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5)
    ax.imshow(_crop(hu[k], y0, y1, x0, x1, AIR_HU), extent=extent, **_window(hu))
    xs, ys = np.arange(x0, x1), np.arange(y0, y1)
    # the model's outline first, solid and wider; the expert's on top of it, dashed: both show
    for labels, style in ((prediction_labels, PREDICTION_STYLE), (reference_labels, REFERENCE_STYLE)):
        if labels is None:
            continue
        region = _crop((labels[k] > 0).astype(np.float32), y0, y1, x0, x1, 0.0)
        if region.any():
            ax.contour(xs, ys, region, levels=[0.5], **style)
    long_line = _axis_line(ax, geometry, node, "long")
    short_line = _axis_line(ax, geometry, node, "short")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect(sy / sx)
    ax.set_xticks([])
    ax.set_yticks([])
    letters = screen_letters(geometry.direction_matrix[:, 0], geometry.direction_matrix[:, 1])
    _letters(ax, letters)
    _scale_bar(ax, extent, sx, fov_mm)
    z_mm = node.get("measurement_slice_z_mm")
    where = f", z {z_mm:.1f} mm" if z_mm is not None else ""
    flag = ", IMPLAUSIBLE" if node.get("quality_flag") == IMPLAUSIBLE else ""
    ax.set_title(
        plain(f"node {node['node_index']} ({node['source']}{flag}){where}"),
        fontsize=8,
        pad=3,
        color="#B00000" if flag else "black",
        **PLAIN,
    )
    return ax, node, k, letters, long_line, short_line


def _axis_line(ax: Axes, geometry: Geometry, node: Mapping[str, Any], which: str) -> Any:
    ends = node.get(f"{which}_axis_endpoints_mm")
    length = node.get(f"{which}_axis_mm")
    if ends is None or length is None:
        return None
    index = physical_to_index(geometry, np.asarray(ends, dtype=float))
    (line,) = ax.plot(index[:, 2], index[:, 1], color=AXIS_COLOUR, linewidth=1.2, solid_capstyle="butt")
    label = f"{'L' if which == 'long' else 'S'} {float(length):.1f} mm"
    # long: label at its right end, above; short: at its lower end (larger row), below
    end = index[int(np.argmax(index[:, 2]))] if which == "long" else index[int(np.argmax(index[:, 1]))]
    text = ax.annotate(
        plain(label),
        (end[2], end[1]),
        xytext=(4, 3) if which == "long" else (2, -11),
        textcoords="offset points",
        color=AXIS_COLOUR,
        fontsize=7,
        bbox={"boxstyle": "square,pad=0.1", "facecolor": "black", "alpha": 0.6, "linewidth": 0},
        **PLAIN,
    )
    return line, text


def _letters(ax: Axes, letters: Mapping[str, str]) -> None:
    style: dict[str, Any] = {
        "color": "white",
        "fontsize": 8,
        "fontweight": "bold",
        "transform": ax.transAxes,
        **PLAIN,
    }
    ax.text(0.02, 0.5, letters["left"], ha="left", va="center", **style)
    ax.text(0.98, 0.5, letters["right"], ha="right", va="center", **style)
    ax.text(0.5, 0.98, letters["top"], ha="center", va="top", **style)
    ax.text(0.5, 0.02, letters["bottom"], ha="center", va="bottom", **style)


def _scale_bar(ax: Axes, extent: tuple[float, float, float, float], sx: float, fov_mm: float) -> None:
    length_mm = max(v for v in (5.0, 10.0, 20.0, 50.0, 100.0) if v <= fov_mm / 3.0)
    x_start = extent[0] + 0.06 * (extent[1] - extent[0])
    y = extent[2] - 0.08 * (extent[2] - extent[3])
    ax.plot([x_start, x_start + length_mm / sx], [y, y], color="white", linewidth=2.0)
    ax.text(
        x_start, y - 0.02 * (extent[2] - extent[3]), f"{length_mm:g} mm", color="white", fontsize=7, **PLAIN
    )


def _draw_empty(ax: Axes, hu: np.ndarray, geometry: Geometry, n_specks: int = 0) -> None:
    k = hu.shape[0] // 2
    ax.imshow(hu[k], **_window(hu))
    ax.set_aspect(geometry.spacing_mm[1] / geometry.spacing_mm[0])
    ax.set_xticks([])
    ax.set_yticks([])
    _letters(ax, screen_letters(geometry.direction_matrix[:, 0], geometry.direction_matrix[:, 1]))
    what = f"no nodes but {n_specks} speck{'s' if n_specks != 1 else ''}" if n_specks else "no nodes"
    ax.set_title(f"{what} (slice {k})", fontsize=8, pad=3, **PLAIN)


def _draw_coronal(
    ax: Axes,
    hu: np.ndarray,
    geometry: Geometry,
    nodes: Sequence[Mapping[str, Any]],
    shown: Sequence[Mapping[str, Any]],
) -> None:
    """The (z, x) index plane through the first shown node (or the middle), superior up."""
    nz, ny, nx = hu.shape
    row = int(round(_node_slice_and_centre(shown[0], geometry)[2])) if shown else ny // 2
    row = int(np.clip(row, 0, ny - 1))
    ax.imshow(hu[:, row, :], origin="lower", extent=(-0.5, nx - 0.5, -0.5, nz - 0.5), **_window(hu))
    normal = geometry.direction_matrix[:, 2]
    superior_up = normal[2] >= 0
    if not superior_up:
        ax.invert_yaxis()
    ax.set_aspect(geometry.spacing_mm[2] / geometry.spacing_mm[0])
    ax.set_xticks([])
    ax.set_yticks([])
    _letters(ax, screen_letters(geometry.direction_matrix[:, 0], -normal if superior_up else normal))
    source = shown[0]["source"] if shown else None
    marked = [n for n in nodes if n.get("source") == source]
    if marked:
        centres = physical_to_index(
            geometry, np.array([[n["centroid_x_mm"], n["centroid_y_mm"], n["centroid_z_mm"]] for n in marked])
        )
        colour = REFERENCE_COLOUR if source == "reference" else PREDICTION_COLOUR
        ax.scatter(centres[:, 2], centres[:, 0], s=14, facecolors="none", edgecolors=colour, linewidths=1.0)
        labelled = {int(n["node_index"]) for n in shown}
        for node, centre in zip(marked, centres, strict=True):
            if int(node["node_index"]) in labelled:
                ax.annotate(
                    plain(node["node_index"]),
                    (centre[2], centre[0]),
                    xytext=(4, 2),
                    textcoords="offset points",
                    color=colour,
                    fontsize=7,
                    **PLAIN,
                )
    ax.set_title(f"coronal, row {row}: node positions", fontsize=8, pad=3, **PLAIN)


def _legend(fig: Figure, reference: bool, prediction: bool) -> None:
    handles = []
    if reference:
        handles.append(
            Line2D([], [], color=REFERENCE_COLOUR, linestyle=DASHES, linewidth=2, label="expert outline")
        )
    if prediction:
        handles.append(Line2D([], [], color=PREDICTION_COLOUR, linewidth=2.4, label="model outline"))
    handles.append(Line2D([], [], color=AXIS_COLOUR, linewidth=2, label="RECIST long (L) / short (S) axis"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)


def _panel_record(
    height_px: int,
    ax: Axes,
    node: Mapping[str, Any],
    slice_index: int,
    letters: dict[str, str],
    long_line: Any,
    short_line: Any,
) -> Panel:
    """What one drawn panel shows, with its data-to-PNG transform read from the drawn axes."""
    to_display = ax.transData
    basis = to_display.transform(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    origin, ex, ey = basis[0], basis[1] - basis[0], basis[2] - basis[0]
    matrix = np.array(
        [[ex[0], ey[0], origin[0]], [-ex[1], -ey[1], height_px - origin[1]]],
        dtype=float,
    )
    bbox = ax.get_window_extent()
    box = (float(bbox.x0), float(height_px - bbox.y1), float(bbox.x1), float(height_px - bbox.y0))

    def line_png(drawn: Any) -> tuple[tuple[float, float], tuple[float, float]] | None:
        if drawn is None:
            return None
        xy = np.column_stack([drawn[0].get_xdata(), drawn[0].get_ydata(), np.ones(2)])
        (a, b) = xy @ matrix.T
        return ((float(a[0]), float(a[1])), (float(b[0]), float(b[1])))

    return Panel(
        node_index=int(node["node_index"]),
        source=str(node["source"]),
        slice_index=slice_index,
        index_to_png=matrix,
        box_png=box,
        long_axis_png=line_png(long_line),
        short_axis_png=line_png(short_line),
        long_axis_label=long_line[1].get_text() if long_line is not None else None,
        short_axis_label=short_line[1].get_text() if short_line is not None else None,
        letters=letters,
    )

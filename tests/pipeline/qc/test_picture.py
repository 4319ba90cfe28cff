"""The QC picture shows what the tables say: outlines where the mask is, axes as long as the rows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.geometry import Geometry
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled
from pipeline.qc import Panel, nodes_for_qc, qc_png, render_qc
from pipeline.qc.picture import AXIS_COLOUR, PREDICTION_COLOUR, REFERENCE_COLOUR
from tests.support.phantoms import Phantom, make_phantom

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Phantom, Geometry, np.ndarray, list[dict]]:
    phantom = make_phantom(tmp_path_factory.mktemp("qc"), seed=3, write_seg=False)
    geometry = Geometry(
        size_zyx=phantom.hu.shape,
        origin_mm=phantom.origin_mm,
        spacing_mm=phantom.spacing_mm,
        direction=IDENTITY,
    )
    labels = label_nodes(phantom.mask, geometry)
    rows = nodes_for_qc(measure_labelled(labels, geometry, hu=phantom.hu), "reference")
    return phantom, geometry, labels, rows


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)


def _pixels_of(
    png: bytes, colour: str, box: tuple[float, float, float, float], tol: float = 60.0
) -> np.ndarray:
    """(column, row) of PNG pixels inside ``box`` close to ``colour``."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
    near = np.linalg.norm(image - _rgb(colour), axis=2) < tol
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    inside = np.zeros_like(near)
    inside[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = True
    rows, cols = np.nonzero(near & inside)
    return np.column_stack([cols, rows]).astype(float)


def _boundary_png(mask_slice: np.ndarray, panel: Panel) -> np.ndarray:
    """Midpoints of the pixel edges between inside and outside, mapped into the PNG."""
    m = mask_slice.astype(bool)
    ys, xs = np.nonzero(m[:, 1:] != m[:, :-1])
    points = [np.column_stack([xs + 0.5, ys])]
    ys, xs = np.nonzero(m[1:, :] != m[:-1, :])
    points.append(np.column_stack([xs, ys + 0.5]))
    index = np.vstack(points).astype(float)
    return np.column_stack([index, np.ones(len(index))]) @ panel.index_to_png.T


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each point of ``a``, the distance to the nearest point of ``b``."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)).min(axis=1)


def _outline_matches(png: bytes, panel: Panel, mask_slice: np.ndarray, colour: str) -> tuple[float, float]:
    """(largest distance of an outline pixel from the boundary, share of boundary covered), in PNG px."""
    drawn = _pixels_of(png, colour, panel.box_png)
    boundary = _boundary_png(mask_slice, panel)
    in_box = (
        (boundary[:, 0] > panel.box_png[0] + 3)
        & (boundary[:, 0] < panel.box_png[2] - 3)
        & (boundary[:, 1] > panel.box_png[1] + 3)
        & (boundary[:, 1] < panel.box_png[3] - 3)
    )
    assert len(drawn) > 20 and in_box.sum() > 8
    return float(_nearest(drawn, boundary).max()), float((_nearest(boundary[in_box], drawn) < 3.0).mean())


def _tolerance_px(panel: Panel) -> float:
    """Half a voxel (a contour cuts corners), half the line width and a pixel of antialiasing."""
    voxel_px = float(np.abs(panel.index_to_png[:, :2]).max())
    return 0.5 * voxel_px + 2.0


def test_reference_outline_lies_on_the_node_boundary(series) -> None:  # type: ignore[no-untyped-def]
    phantom, geometry, labels, rows = series
    picture = render_qc(phantom.hu, geometry, reference_labels=labels, prediction_labels=None, nodes=rows)
    assert [p.node_index for p in picture.panels] == [1, 2, 3]
    for panel in picture.panels:
        k = panel.slice_index
        row = rows[panel.node_index - 1]
        assert geometry.index_to_physical(np.array([[k, 0, 0]]))[0][2] == pytest.approx(
            row["measurement_slice_z_mm"]
        )
        worst, covered = _outline_matches(picture.png, panel, labels[k] > 0, REFERENCE_COLOUR)
        assert worst <= _tolerance_px(panel), (panel.node_index, worst)
        assert covered >= 0.95, (panel.node_index, covered)
        # the same pixels against a mask moved by 2 voxels do not match: the check can fail
        moved_worst, _ = _outline_matches(
            picture.png, panel, np.roll(labels[k] > 0, 2, axis=1), REFERENCE_COLOUR
        )
        assert moved_worst > _tolerance_px(panel)


def test_prediction_outline_in_its_own_colour(series) -> None:  # type: ignore[no-untyped-def]
    phantom, geometry, labels, rows = series
    prediction = np.roll(labels, 3, axis=2)
    picture = render_qc(phantom.hu, geometry, reference_labels=None, prediction_labels=prediction, nodes=rows)
    panel = picture.panels[0]
    worst, covered = _outline_matches(
        picture.png, panel, prediction[panel.slice_index] > 0, PREDICTION_COLOUR
    )
    assert worst <= _tolerance_px(panel) and covered >= 0.95
    assert len(_pixels_of(picture.png, REFERENCE_COLOUR, panel.box_png)) == 0


def test_drawn_axes_are_as_long_as_the_node_rows(series) -> None:  # type: ignore[no-untyped-def]
    phantom, geometry, labels, rows = series
    picture = render_qc(phantom.hu, geometry, reference_labels=labels, prediction_labels=None, nodes=rows)
    sx, sy, _ = geometry.spacing_mm
    for panel in picture.panels:
        row = rows[panel.node_index - 1]
        png_to_index = np.linalg.inv(panel.index_to_png[:, :2])
        for which, ends, label in (
            ("long", panel.long_axis_png, panel.long_axis_label),
            ("short", panel.short_axis_png, panel.short_axis_label),
        ):
            assert ends is not None
            delta = png_to_index @ (np.asarray(ends[1]) - np.asarray(ends[0]))
            length_mm = float(np.hypot(delta[0] * sx, delta[1] * sy))
            assert length_mm == pytest.approx(row[f"{which}_axis_mm"], abs=1e-6)
            assert label == f"{which[0].upper()} {row[f'{which}_axis_mm']:.1f} mm"
            # the line is really drawn: axis-coloured pixels all along it
            axis_pixels = _pixels_of(picture.png, AXIS_COLOUR, panel.box_png, tol=40.0)
            samples = np.linspace(ends[0], ends[1], 12)[1:-1]
            assert _nearest(samples, axis_pixels).max() <= 1.5


def test_same_inputs_same_bytes_and_a_valid_png(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phantom, geometry, labels, rows = series
    kwargs = {"reference_labels": labels, "prediction_labels": np.roll(labels, 2, axis=1), "nodes": rows}
    first = qc_png(phantom.hu, geometry, **kwargs)
    assert first == qc_png(phantom.hu, geometry, **kwargs)
    image = Image.open(io.BytesIO(first))
    assert image.format == "PNG" and image.size[0] > image.size[1] > 200


def test_no_nodes_still_draws(series) -> None:  # type: ignore[no-untyped-def]
    phantom, geometry, _, _ = series
    empty = np.zeros(phantom.hu.shape, dtype=np.uint16)
    picture = render_qc(phantom.hu, geometry, reference_labels=empty, prediction_labels=None, nodes=[])
    assert picture.panels == () and picture.png.startswith(b"\x89PNG")


def test_largest_four_reference_nodes_are_shown(series) -> None:  # type: ignore[no-untyped-def]
    phantom, geometry, labels, rows = series
    many = [dict(rows[0], node_index=i) for i in range(1, 7)] + [dict(rows[0], source="prediction")]
    picture = render_qc(phantom.hu, geometry, reference_labels=labels, prediction_labels=labels, nodes=many)
    assert [(p.node_index, p.source) for p in picture.panels] == [(i, "reference") for i in range(1, 5)]


def test_mismatched_shapes_are_refused(series) -> None:  # type: ignore[no-untyped-def]
    phantom, geometry, labels, rows = series
    with pytest.raises(ValueError, match=r"reference labels shape \(40, 128, 127\) does not match HU"):
        render_qc(phantom.hu, geometry, reference_labels=labels[..., :-1], prediction_labels=None, nodes=rows)


def test_both_outlines_stay_visible_where_they_agree(series) -> None:  # type: ignore[no-untyped-def]
    """The model's outline hid the expert's where they agreed (21 orange pixels against 917 blue)."""
    phantom, geometry, labels, rows = series
    picture = render_qc(phantom.hu, geometry, reference_labels=labels, prediction_labels=labels, nodes=rows)
    for panel in picture.panels:
        orange = len(_pixels_of(picture.png, REFERENCE_COLOUR, panel.box_png))
        blue = len(_pixels_of(picture.png, PREDICTION_COLOUR, panel.box_png))
        assert orange >= blue / 3 and blue >= orange / 3, (panel.node_index, orange, blue)
        worst, covered = _outline_matches(picture.png, panel, labels[panel.slice_index] > 0, REFERENCE_COLOUR)
        assert worst <= _tolerance_px(panel) and covered >= 0.9
    # the legend, under the panels, names both outlines in their colours
    width, height = picture.size_px
    legend = (0.0, max(p.box_png[3] for p in picture.panels) + 1, float(width), float(height))
    assert len(_pixels_of(picture.png, REFERENCE_COLOUR, legend)) > 10
    assert len(_pixels_of(picture.png, PREDICTION_COLOUR, legend)) > 10


def test_specks_get_no_panel_and_are_counted(series) -> None:  # type: ignore[no-untyped-def]
    phantom, geometry, labels, rows = series
    flagged = [dict(r, quality_flag="speck") if r["node_index"] == 1 else r for r in rows]
    picture = render_qc(phantom.hu, geometry, reference_labels=labels, prediction_labels=None, nodes=flagged)
    assert [p.node_index for p in picture.panels] == [2, 3]
    only_specks = [dict(r, quality_flag="speck") for r in rows]
    picture = render_qc(
        phantom.hu, geometry, reference_labels=labels, prediction_labels=None, nodes=only_specks
    )
    assert picture.panels == ()


def test_measured_nodes_hand_their_flag_to_the_picture(series) -> None:  # type: ignore[no-untyped-def]
    _, _, _, rows = series
    assert {r["quality_flag"] for r in rows} == {"ok"}

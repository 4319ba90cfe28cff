"""RECIST axes and 3D diameter on analytic shapes, with explicit error bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.measure import regionprops

from pipeline.errors import MeasurementError
from pipeline.measure.categories import RecistCategory, recist_category
from pipeline.measure.diameter3d import max_diameter_3d
from pipeline.measure.feret import perpendicular_chord, polygon_edges
from pipeline.measure.recist import recist_axes
from tests.support.analytic_shapes import (
    ellipse_errors,
    ellipsoid,
    ellipsoid_errors,
    rotated_ellipse,
    summary,
)

# Acceptance bounds: worst case within one pixel, mean within half a pixel
# (a pixel is the larger in-plane spacing).
WORST_PX, MEAN_PX = 1.0, 0.5


def test_rotated_ellipses_at_anisotropic_spacing_within_bounds() -> None:
    stats = summary(ellipse_errors(150, seed=11, anisotropy=1.5))
    assert stats["long_worst_px"] <= WORST_PX and stats["short_worst_px"] <= WORST_PX, stats
    assert stats["long_mean_px"] <= MEAN_PX and stats["short_mean_px"] <= MEAN_PX, stats


def test_ellipsoids_within_bounds_on_the_measured_slice() -> None:
    stats = summary(ellipsoid_errors(40, seed=12))
    assert stats["long_worst_px"] <= WORST_PX and stats["short_worst_px"] <= WORST_PX, stats
    assert stats["long_mean_px"] <= MEAN_PX and stats["short_mean_px"] <= MEAN_PX, stats


def test_measures_the_slice_where_the_long_axis_is_longest() -> None:
    mask, z = ellipsoid(
        semi_axes_mm=(12.0, 7.0, 10.0),
        angle_rad=0.3,
        spacing_mm=(0.7, 0.7, 2.5),
        center_offset_vox=(0.0, 0.0, 0.2),
    )
    axes = recist_axes(mask, (0.7, 0.7, 2.5))
    assert axes.slice_index == int(np.argmin(np.abs(z)))


def test_anisotropic_pixels_axis_aligned_ellipse() -> None:
    """A 30 x 12 mm ellipse on 0.5 x 1.0 mm pixels: x-major, then rotated 90 degrees."""
    for angle, spacing in ((0.0, (0.5, 1.0)), (math.pi / 2, (0.5, 1.0)), (0.0, (1.0, 0.5))):
        mask = rotated_ellipse(a_mm=15.0, b_mm=6.0, angle_rad=angle, spacing_xy=spacing)
        axes = recist_axes(mask[None], (*spacing, 1.0))
        assert axes.long_axis_mm == pytest.approx(30.0, abs=1.0)
        assert axes.short_axis_mm == pytest.approx(12.0, abs=1.0)
        p, q = (np.asarray(e) for e in axes.long_axis_endpoints_mm)
        direction = (q - p) / axes.long_axis_mm
        expected = np.array([math.cos(angle), math.sin(angle)])
        assert abs(float(direction @ expected)) == pytest.approx(1.0, abs=0.01)


def test_short_axis_is_the_longest_perpendicular_chord_not_the_strip_width() -> None:
    """A slanted bar: every vertical chord is 1 mm long, its vertical extent is 11 mm."""
    bar = np.array([[0.0, 0.0], [10.0, 10.0], [10.0, 11.0], [0.0, 1.0]])
    assert perpendicular_chord(polygon_edges([bar]), np.array([1.0, 0.0]))[0] == pytest.approx(1.0)
    square = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    assert perpendicular_chord(polygon_edges([square]), np.array([1.0, 0.0]))[0] == pytest.approx(4.0)
    diagonal = np.array([1.0, 1.0]) / math.sqrt(2)
    length, r, s = perpendicular_chord(polygon_edges([square]), diagonal)
    assert length == pytest.approx(4.0 * math.sqrt(2))
    assert {tuple(np.round(r, 9)), tuple(np.round(s, 9))} == {(4.0, 0.0), (0.0, 4.0)}


def test_long_axis_agrees_with_scikit_image_feret_diameter() -> None:
    """scikit-image's feret_diameter_max (isotropic 1 mm pixels) agrees within one pixel."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        a = rng.uniform(4, 15)
        mask = rotated_ellipse(
            a_mm=a, b_mm=rng.uniform(3, a), angle_rad=rng.uniform(0, math.pi), spacing_xy=(1.0, 1.0)
        )
        (region,) = regionprops(mask.astype(np.uint8))
        long_mm = recist_axes(mask[None], (1.0, 1.0, 1.0)).long_axis_mm
        assert long_mm == pytest.approx(region.feret_diameter_max, abs=1.0)


def test_max_diameter_3d_of_ellipsoids() -> None:
    rng = np.random.default_rng(8)
    for _ in range(10):
        spacing = (0.7, 0.7, float(rng.choice([1.0, 2.5])))
        semi = tuple(float(v) for v in rng.uniform(4, 14, 3))
        mask, _ = ellipsoid(
            semi_axes_mm=semi,
            angle_rad=rng.uniform(0, math.pi),
            spacing_mm=spacing,
            center_offset_vox=tuple(rng.uniform(-0.5, 0.5, 3)),
        )
        # bound: one voxel along the axis that carries the diameter (the coarsest, at worst)
        assert max_diameter_3d(mask, spacing) == pytest.approx(2 * max(semi), abs=max(spacing))


def test_single_voxel_and_single_pixel_nodes_are_measured() -> None:
    voxel = np.zeros((3, 3, 3), bool)
    voxel[1, 1, 1] = True
    axes = recist_axes(voxel, (0.8, 0.8, 2.5))
    assert 0 < axes.short_axis_mm <= axes.long_axis_mm <= 0.8 * math.sqrt(2)
    # one slice thick (pole to pole), and never shorter than the long axis
    assert max(2.5, axes.long_axis_mm) <= max_diameter_3d(voxel, (0.8, 0.8, 2.5)) <= math.hypot(0.8, 0.8, 2.5)


def test_empty_masks_are_refused() -> None:
    with pytest.raises(MeasurementError, match="empty"):
        recist_axes(np.zeros((2, 2, 2), bool), (1.0, 1.0, 1.0))
    with pytest.raises(MeasurementError, match="empty"):
        max_diameter_3d(np.zeros((2, 2, 2), bool), (1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("short_mm", "category"),
    [
        (0.0, RecistCategory.NORMAL),
        (9.99, RecistCategory.NORMAL),
        (10.0, RecistCategory.NON_TARGET),
        (10.01, RecistCategory.NON_TARGET),
        (14.99, RecistCategory.NON_TARGET),
        (15.0, RecistCategory.TARGET),
        (15.01, RecistCategory.TARGET),
        (40.0, RecistCategory.TARGET),
    ],
)
def test_recist_categories_at_and_around_thresholds(short_mm: float, category: RecistCategory) -> None:
    assert recist_category(short_mm) is category
    assert category.value in ("target", "non_target", "normal")

"""The largest 3D diameter: never shorter than the long axis (it is the largest distance over
the same object), and close to the truth on ellipsoids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.geometry import Geometry
from pipeline.measure.diameter3d import max_diameter_3d
from pipeline.measure.nodes import NodeMeasurement, measure_nodes
from tests.support.analytic_shapes import ellipsoid, random_nodes

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _grid(shape: tuple[int, ...], spacing: tuple[float, float, float]) -> Geometry:
    return Geometry(size_zyx=tuple(shape), origin_mm=(0.0, 0.0, 0.0), spacing_mm=spacing, direction=IDENTITY)


def _shorter_than_long_axis(nodes: list[NodeMeasurement]) -> list[tuple[int, float, float]]:
    return [
        (n.node_index, n.long_axis_mm, n.max_diameter_3d_mm)
        for n in nodes
        if n.max_diameter_3d_mm < n.long_axis_mm
    ]


def test_never_shorter_than_the_long_axis_on_ellipsoids() -> None:
    rng = np.random.default_rng(31)
    nodes = []
    for _ in range(60):
        spacing = (
            float(rng.uniform(0.6, 0.9)),
            float(rng.uniform(0.6, 0.9)),
            float(rng.choice([1.0, 1.25, 2.5, 5.0])),
        )
        a = rng.uniform(1.0, 14.0)
        # flat (one or two slices thick) to round
        mask, _ = ellipsoid(
            semi_axes_mm=(a, rng.uniform(0.5, a), rng.uniform(0.3, 14.0)),
            angle_rad=rng.uniform(0, math.pi),
            spacing_mm=spacing,
            center_offset_vox=tuple(rng.uniform(-0.5, 0.5, 3)),
        )
        if mask.any():
            nodes += measure_nodes(mask, _grid(mask.shape, spacing))
    assert len(nodes) >= 50
    assert _shorter_than_long_axis(nodes) == []


def test_never_shorter_than_the_long_axis_on_small_and_irregular_nodes() -> None:
    for seed, spacing in ((1, (0.78, 0.78, 1.25)), (2, (0.7, 0.9, 2.5)), (3, (0.6, 0.6, 5.0))):
        mask = random_nodes((24, 160, 160), 300, seed=seed)
        nodes = measure_nodes(mask, _grid(mask.shape, spacing))
        assert len(nodes) >= 250
        assert _shorter_than_long_axis(nodes) == []


def test_two_voxel_node() -> None:
    """Two voxels side by side in plane (the node of issue 8: 3D diameter 0.99 mm, long axis 1.34 mm)."""
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 1, 1:3] = True
    (node,) = measure_nodes(mask, _grid(mask.shape, (0.78, 0.78, 1.25)))
    assert node.max_diameter_3d_mm >= node.long_axis_mm
    # the node spans one slice: the poles are half a slice either side of it
    assert node.max_diameter_3d_mm >= 1.25
    assert node.max_diameter_3d_mm <= math.hypot(2 * 0.78, 1.25)


def test_never_shorter_than_the_long_axis_on_phantoms(phantom, tmp_path) -> None:
    """The default phantom, and one with flat and small nodes (one or two slices thick)."""
    from pipeline.dicom.ct import decode_ct_series
    from tests.support.phantoms import Ellipsoid, make_phantom

    flat = make_phantom(
        tmp_path / "flat",
        shape_zyx=(24, 96, 96),
        pixel_spacing_mm=(0.78, 0.78),
        slice_spacing_mm=2.5,
        nodes=[
            Ellipsoid((-10.0, -10.0, -300.0 + 10 * 2.5), (8.0, 5.0, 1.5)),
            Ellipsoid((12.0, 8.0, -300.0 + 14 * 2.5 + 0.4), (4.0, 3.0, 2.0)),
            Ellipsoid((-12.0, 14.0, -300.0 + 6 * 2.5), (1.0, 0.6, 0.8)),
            Ellipsoid((10.0, -16.0, -300.0 + 18 * 2.5), (6.0, 6.0, 3.5)),
        ],
        write_seg=False,
        seed=4,
    )
    for case, expected in ((phantom, 3), (flat, 4)):
        ct = decode_ct_series(str(case.ct_dir))
        nodes = measure_nodes(case.mask, ct.geometry, hu=ct.hu)
        assert len(nodes) == expected
        assert _shorter_than_long_axis(nodes) == []


def test_close_to_the_truth_on_ellipsoids() -> None:
    """Within one voxel along the diameter (at worst the slice spacing) of 2 x the longest
    semi-axis, and unbiased on average to a fifth of a slice."""
    rng = np.random.default_rng(8)
    errors = []
    for _ in range(30):
        spacing = (0.7, 0.7, float(rng.choice([1.0, 2.5, 5.0])))
        semi = tuple(float(v) for v in rng.uniform(4, 14, 3))
        mask, _ = ellipsoid(
            semi_axes_mm=semi,
            angle_rad=rng.uniform(0, math.pi),
            spacing_mm=spacing,
            center_offset_vox=tuple(rng.uniform(-0.5, 0.5, 3)),
        )
        error = max_diameter_3d(mask, spacing) - 2 * max(semi)
        assert abs(error) <= max(spacing), (semi, spacing, error)
        errors.append(error / spacing[2])
    assert abs(float(np.mean(errors))) <= 0.2


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 2.5), (0.5, 1.0, 1.0)])
def test_single_voxel(spacing: tuple[float, float, float]) -> None:
    voxel = np.zeros((3, 3, 3), bool)
    voxel[1, 1, 1] = True
    # one slice thick (the poles), plus a little in plane
    assert spacing[2] <= max_diameter_3d(voxel, spacing) <= math.hypot(spacing[0], spacing[1], spacing[2])

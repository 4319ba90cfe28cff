"""End points of the RECIST axes: on the node's sub-pixel boundary, as far apart as the axis is
long, and in patient coordinates through the grid's direction (oblique grids included)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.geometry import Geometry
from pipeline.measure.nodes import NodeMeasurement, measure_nodes
from tests.support.analytic_shapes import ellipsoid, staircase_distance_mm

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _rotation(seed: int) -> tuple[float, ...]:
    """A random proper rotation (an oblique grid), row-major."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 2] = -q[:, 2]
    return tuple(float(v) for v in q.ravel())


def _check_endpoints(node: NodeMeasurement, labels_mask: np.ndarray, geometry: Geometry) -> None:
    """Both axes: length = end point distance; end points on the measurement slice and within
    half a pixel of the pixel-edge boundary of the node's cross-section there."""
    assert node.max_diameter_3d_mm >= node.long_axis_mm
    sx, sy, _ = geometry.spacing_mm
    half_pixel = 0.5 * max(sx, sy)
    inverse = np.linalg.inv(geometry.direction_matrix)
    for length, ends in (
        (node.long_axis_mm, node.long_axis_endpoints_mm),
        (node.short_axis_mm, node.short_axis_endpoints_mm),
    ):
        a, b = np.asarray(ends[0]), np.asarray(ends[1])
        assert float(np.linalg.norm(a - b)) == pytest.approx(length, abs=1e-6)
        for point in (a, b):
            ijk = inverse @ (point - np.asarray(geometry.origin_mm)) / np.asarray(geometry.spacing_mm)
            z = round(float(ijk[2]))
            assert ijk[2] == pytest.approx(z, abs=1e-6)
            physical_z = geometry.index_to_physical(np.array([[z, 0.0, 0.0]]))[0]
            # the measurement slice's position along the slice normal
            normal = geometry.direction_matrix[:, 2]
            assert float((physical_z - point) @ normal) == pytest.approx(0.0, abs=1e-6)
            in_plane = np.array([ijk[0] * sx, ijk[1] * sy])
            assert staircase_distance_mm(labels_mask[z], (sx, sy), in_plane) <= half_pixel + 1e-9


@pytest.mark.parametrize("oblique", [False, True])
def test_endpoints_of_random_ellipsoids(oblique: bool) -> None:
    rng = np.random.default_rng(21 + oblique)
    for i in range(25):
        spacing = (float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.5, 1.0)), float(rng.choice([1.0, 2.5])))
        a = rng.uniform(1.0, 12.0)
        mask, _ = ellipsoid(
            semi_axes_mm=(a, rng.uniform(0.5, a), rng.uniform(1.0, 10.0)),
            angle_rad=rng.uniform(0, math.pi),
            spacing_mm=spacing,
            center_offset_vox=tuple(rng.uniform(-0.5, 0.5, 3)),
        )
        geometry = Geometry(
            size_zyx=mask.shape,
            origin_mm=tuple(rng.uniform(-100, 100, 3)),
            spacing_mm=spacing,
            direction=_rotation(i) if oblique else IDENTITY,
        )
        for node in measure_nodes(mask, geometry):
            _check_endpoints(node, mask, geometry)


def test_endpoints_of_small_and_irregular_nodes() -> None:
    """Single voxels, two-voxel nodes, bars and random blobs (where corner cuts matter most)."""
    rng = np.random.default_rng(3)
    mask = np.zeros((12, 40, 40), bool)
    mask[2, 2, 2] = True
    mask[2, 5, 5:7] = True
    mask[4:6, 10, 10] = True
    mask[6, 20:30, 3] = True
    mask[8:11, 25:35, 20:35] = rng.random((3, 10, 15)) < 0.5
    geometry = Geometry(
        size_zyx=mask.shape, origin_mm=(5.0, -3.0, 40.0), spacing_mm=(0.7, 0.9, 2.0), direction=_rotation(7)
    )
    nodes = measure_nodes(mask, geometry)
    assert len(nodes) >= 5
    for node in nodes:
        _check_endpoints(node, mask, geometry)


def test_endpoints_on_the_phantom(phantom) -> None:
    geometry = Geometry(
        size_zyx=phantom.mask.shape,
        origin_mm=phantom.origin_mm,
        spacing_mm=phantom.spacing_mm,
        direction=IDENTITY,
    )
    nodes = measure_nodes(phantom.mask, geometry)
    assert len(nodes) == 3
    for node in nodes:
        _check_endpoints(node, phantom.mask, geometry)
    # the long axis of the largest node runs along x (semi-axes 11 x 8 mm in plane)
    a, b = (np.asarray(p) for p in nodes[0].long_axis_endpoints_mm)
    assert abs((b - a)[0]) / nodes[0].long_axis_mm >= 0.9
    c, d = (np.asarray(p) for p in nodes[0].short_axis_endpoints_mm)
    assert abs((d - c)[1]) / nodes[0].short_axis_mm >= 0.9


def test_rotating_the_grid_rotates_the_endpoints() -> None:
    mask, _ = ellipsoid(
        semi_axes_mm=(9.0, 5.0, 6.0),
        angle_rad=0.4,
        spacing_mm=(0.8, 0.8, 2.0),
        center_offset_vox=(0.2, -0.1, 0.3),
    )
    plain = Geometry(
        size_zyx=mask.shape, origin_mm=(0.0, 0.0, 0.0), spacing_mm=(0.8, 0.8, 2.0), direction=IDENTITY
    )
    rotation = _rotation(11)
    oblique = Geometry(
        size_zyx=mask.shape, origin_mm=(10.0, 20.0, 30.0), spacing_mm=(0.8, 0.8, 2.0), direction=rotation
    )
    (n0,) = measure_nodes(mask, plain)
    (n1,) = measure_nodes(mask, oblique)
    r = np.asarray(rotation).reshape(3, 3)
    for e0, e1 in (
        (n0.long_axis_endpoints_mm, n1.long_axis_endpoints_mm),
        (n0.short_axis_endpoints_mm, n1.short_axis_endpoints_mm),
    ):
        expected = np.asarray(e0) @ r.T + np.array([10.0, 20.0, 30.0])
        assert np.asarray(e1) == pytest.approx(expected, abs=1e-9)

"""Attacks on resample_by_slabs: grids outside the source, single slices, right-angle rotations
and flips, slabs thinner than one slice, other source dtypes, and exact ties."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.resample import resample_by_slabs
from tests.support.grids import grid, resampled_whole

LINEAR, NEAREST = sitk.sitkLinear, sitk.sitkNearestNeighbor

# exact right-angle direction matrices (no 6e-17 from cos(90 degrees))
ROT_X_90 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
ROT_Y_90 = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
ROT_Z_90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
SWAP_XZ = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # improper: a flip


def _slabs(source, source_grid, target_grid, interpolator, default=-1024.0, slab_voxels=1, **kw):  # type: ignore[no-untyped-def]
    return resample_by_slabs(
        source,
        source_grid,
        target_grid,
        interpolator=interpolator,
        default=default,
        convert=lambda slab: slab,
        out_dtype=np.float32,
        slab_voxels=slab_voxels,
        **kw,
    )


def _source(shape, seed=0):  # type: ignore[no-untyped-def]
    return np.random.default_rng(seed).integers(-1000, 1500, size=shape).astype(np.int16)


@pytest.mark.parametrize("interpolator", [LINEAR, NEAREST])
@pytest.mark.parametrize(
    "target_origin",
    [(0.0, 0.0, 500.0), (0.0, 0.0, -500.0), (500.0, 0.0, 3.0), (0.0, 0.0, 12.6)],
)
def test_target_wholly_outside_the_source_is_all_default(interpolator: int, target_origin) -> None:  # type: ignore[no-untyped-def]
    source_grid = grid((10, 8, 9), (0.0, 0.0, 0.0), (1.0, 1.0, 1.25))  # z extent -0.625 .. 11.875
    target_grid = grid((6, 5, 4), target_origin, (1.0, 1.0, 1.0))
    source = _source(source_grid.size_zyx)
    expected = resampled_whole(source, source_grid, target_grid, interpolator, -1024.0)
    for slab_voxels in (1, 10**9):
        got = _slabs(source, source_grid, target_grid, interpolator, slab_voxels=slab_voxels)
        np.testing.assert_array_equal(got, expected)
        assert (got == -1024.0).all()


@pytest.mark.parametrize("interpolator", [LINEAR, NEAREST])
@pytest.mark.parametrize("slab_voxels", [1, 5, 10**9])
@pytest.mark.parametrize(
    "source_size, target_size",
    [((1, 12, 13), (7, 9, 10)), ((9, 12, 13), (1, 9, 10)), ((1, 12, 13), (1, 9, 10)), ((1, 1, 1), (3, 2, 2))],
)
def test_single_slice_sources_and_targets(
    interpolator: int, slab_voxels: int, source_size, target_size
) -> None:  # type: ignore[no-untyped-def]
    source_grid = grid(source_size, (0.3, -0.2, 0.0), (0.9, 1.1, 2.0))
    target_grid = grid(target_size, (1.0, 0.4, -0.9), (1.3, 0.8, 0.3))
    source = _source(source_size, seed=1)
    expected = resampled_whole(source, source_grid, target_grid, interpolator, -1024.0)
    got = _slabs(source, source_grid, target_grid, interpolator, slab_voxels=slab_voxels)
    np.testing.assert_array_equal(got, expected)
    assert (expected != -1024.0).any() == (source_size != (1, 1, 1))  # the 1-voxel source is missed


@pytest.mark.parametrize("interpolator", [LINEAR, NEAREST])
@pytest.mark.parametrize("slab_voxels", [1, 50, 10**9])
@pytest.mark.parametrize(
    "source_dir, target_dir",
    [
        (np.eye(3), ROT_X_90),
        (np.eye(3), ROT_Y_90),
        (ROT_Z_90, np.eye(3)),
        (np.eye(3), SWAP_XZ),
        (np.diag([-1.0, -1.0, -1.0]), np.eye(3)),
        (ROT_Y_90, np.diag([1.0, -1.0, -1.0])),
    ],
)
def test_right_angle_rotations_and_flips(interpolator: int, slab_voxels: int, source_dir, target_dir) -> None:  # type: ignore[no-untyped-def]
    """The source's slice axis lies along a row or a column of the target: every target slab
    needs every source slice."""
    source_grid = grid((14, 11, 12), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), source_dir)
    centre = source_grid.index_to_physical(np.array([[6.5, 5.0, 5.5]]))[0]
    target_size = np.array([10, 9, 8])
    spacing = np.array([0.9, 1.1, 1.3])  # x, y, z
    half = np.asarray(target_dir) @ (spacing * (target_size[::-1] - 1) / 2.0)
    target_grid = grid(target_size, centre - half + 0.123, spacing, target_dir)
    source = _source(source_grid.size_zyx, seed=2)
    expected = resampled_whole(source, source_grid, target_grid, interpolator, -1024.0)
    got = _slabs(source, source_grid, target_grid, interpolator, slab_voxels=slab_voxels)
    np.testing.assert_array_equal(got, expected)
    assert (expected != -1024.0).mean() > 0.5


@pytest.mark.parametrize("interpolator", [LINEAR, NEAREST])
def test_float64_source_is_resampled_as_float64(interpolator: int) -> None:
    source_grid = grid((12, 10, 11), (0.0, 0.0, 0.0), (0.7, 0.8, 1.1), ROT_Z_90)
    target_grid = grid((9, 8, 7), (-3.0, 1.0, 0.5), (0.9, 1.0, 1.6))
    source = np.random.default_rng(3).random(source_grid.size_zyx) * 1e-3 + 1.0  # float64 detail
    expected = resampled_whole(source, source_grid, target_grid, interpolator, 0.0)
    got = _slabs(source, source_grid, target_grid, interpolator, default=0.0, slab_voxels=8 * 7)
    np.testing.assert_array_equal(got, expected)
    assert (expected != 0.0).any()


def test_bool_source_cast_to_uint8_slab_by_slab() -> None:
    source_grid = grid((12, 10, 11), (0.0, 0.0, 0.0), (0.7, 0.8, 1.1))
    target_grid = grid((9, 8, 7), (1.0, 1.0, 0.5), (0.9, 1.0, 1.6))
    source = np.random.default_rng(4).random(source_grid.size_zyx) > 0.5
    expected = resampled_whole(source.astype(np.uint8), source_grid, target_grid, NEAREST, 0.0)
    got = _slabs(source, source_grid, target_grid, NEAREST, default=0.0, source_dtype=np.uint8)
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(got)) == {0.0, 1.0}


def test_bool_source_without_a_source_dtype() -> None:
    """A bool source (which SimpleITK refuses) is read as 0 and 1."""
    source_grid = grid((4, 5, 6), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    source = np.zeros(source_grid.size_zyx, bool)
    source[1:3, 2:4, 2:5] = True
    got = _slabs(source, source_grid, source_grid, NEAREST, default=0.0)
    np.testing.assert_array_equal(got, source.astype(np.float32))


def test_convert_receives_every_slab_and_out_dtype_is_kept() -> None:
    source_grid = grid((10, 6, 7), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    target_grid = grid((11, 4, 5), (0.5, 0.5, -30.0), (1.0, 1.0, 5.0))  # first slices outside
    source = _source(source_grid.size_zyx, seed=5)
    shapes: list[tuple[int, ...]] = []

    def convert(slab: np.ndarray) -> np.ndarray:
        shapes.append(slab.shape)
        return slab > 0

    got = resample_by_slabs(
        source,
        source_grid,
        target_grid,
        interpolator=LINEAR,
        default=-1024.0,
        convert=convert,
        out_dtype=bool,
        slab_voxels=3 * 4 * 5,
    )
    assert got.dtype == bool
    assert shapes == [(3, 4, 5)] * 3 + [(2, 4, 5)]
    np.testing.assert_array_equal(got, resampled_whole(source, source_grid, target_grid, LINEAR, -1024.0) > 0)
    assert not got[:5].any()


# ---- exact ties: target centres exactly half-way between source slices ----

THIRD = 1.0 / 3.0
TIE_SOURCE = grid((40, 3, 3), (0.0, 0.0, 0.0), (1.0, 1.0, THIRD))
TIE_TARGET = grid((60, 3, 3), (0.0, 0.0, 7.5 * THIRD), (1.0, 1.0, THIRD))  # source k = 7.5, 8.5, ...


def test_nearest_neighbour_ties_pick_one_of_the_two_tied_slices() -> None:
    """Where a target centre lies exactly half-way between two source slices, a slab may break the
    tie the other way than a whole-volume resample (its origin is recomputed, rounding differs):
    either neighbour is then the answer, and nothing else differs."""
    source = _source(TIE_SOURCE.size_zyx, seed=1)
    expected = resampled_whole(source, TIE_SOURCE, TIE_TARGET, NEAREST, -1024.0)
    got = _slabs(source, TIE_SOURCE, TIE_TARGET, NEAREST, slab_voxels=63)
    padded = np.concatenate([source.astype(np.float32), np.full((1, 3, 3), -1024.0, np.float32)])
    for t in range(TIE_TARGET.size_zyx[0]):
        k = 7.5 + t  # the target slice's continuous source index: always a tie
        if k > 39.5:
            np.testing.assert_array_equal(got[t], -1024.0)
            np.testing.assert_array_equal(expected[t], -1024.0)
            continue
        below, above = padded[int(k - 0.5)], padded[int(k + 0.5)]
        assert np.all((got[t] == below) | (got[t] == above)), t
        assert np.all((expected[t] == below) | (expected[t] == above)), t


def test_linear_differs_from_the_whole_volume_only_on_the_outer_half_voxel_edge() -> None:
    """A target slice exactly on the source's outer half-voxel edge (k = 39.5) may be inside for a
    slab and outside for the whole volume (rounding again); every other voxel is the same."""
    source = _source(TIE_SOURCE.size_zyx, seed=1)
    expected = resampled_whole(source, TIE_SOURCE, TIE_TARGET, LINEAR, -1024.0)
    got = _slabs(source, TIE_SOURCE, TIE_TARGET, LINEAR, slab_voxels=63)
    edge = 32  # 7.5 + 32 = 39.5
    others = np.ones(TIE_TARGET.size_zyx[0], bool)
    others[edge] = False
    np.testing.assert_array_equal(got[others], expected[others])
    for value in (got[edge], expected[edge]):
        assert np.all(value == -1024.0) or np.all(value == source[39].astype(np.float32))

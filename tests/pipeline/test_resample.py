"""Resampling a slab at a time gives, voxel for voxel, what resampling the whole volume gives."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.resample import resample_by_slabs
from tests.support.grids import grid, resampled_whole


def _rotation(angle_deg: float, axis: int) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


CASES = {
    # the model grid of a CT: same direction, coarser slices and pixels, half-voxel shift
    "to a coarser grid": (
        grid((37, 40, 44), (-20.0, -30.0, -100.0), (0.8, 0.7, 1.25), np.eye(3)),
        grid((19, 19, 23), (-19.6, -29.6, -99.4), (1.5, 1.5, 2.5), np.eye(3)),
    ),
    # and back, with slices stored head first (negative z direction)
    "back to a finer, flipped grid": (
        grid((19, 19, 23), (-19.6, -29.6, -99.4), (1.5, 1.5, 2.5), np.diag([1.0, 1.0, -1.0])),
        grid((37, 40, 44), (-20.0, -30.0, -100.0), (0.8, 0.7, 1.25), np.diag([1.0, 1.0, -1.0])),
    ),
    # oblique: the target is tilted against the source, and partly outside it
    "oblique and partly outside": (
        grid((30, 32, 34), (0.0, 0.0, 0.0), (1.0, 1.1, 1.3), _rotation(12.0, 0)),
        grid((41, 29, 31), (-4.0, 3.0, -6.0), (0.9, 1.2, 1.0), _rotation(-7.0, 1) @ _rotation(20.0, 2)),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("interpolator", [sitk.sitkLinear, sitk.sitkNearestNeighbor])
@pytest.mark.parametrize("slab_voxels", [1, 700, 10**9])
def test_slabs_equal_the_whole_volume(case: str, interpolator: int, slab_voxels: int) -> None:
    source_grid, target_grid = CASES[case]
    rng = np.random.default_rng(3)
    source = rng.integers(-1000, 1500, size=source_grid.size_zyx).astype(np.int16)
    expected = resampled_whole(source.astype(np.float32), source_grid, target_grid, interpolator, -1024.0)
    got = resample_by_slabs(
        source,
        source_grid,
        target_grid,
        interpolator=interpolator,
        default=-1024.0,
        convert=lambda slab: slab,
        out_dtype=np.float32,
        slab_voxels=slab_voxels,
    )
    np.testing.assert_array_equal(got, expected)
    if case == "oblique and partly outside":
        assert (expected == -1024.0).any() and (expected != -1024.0).any()


def test_each_slab_is_converted_and_the_source_is_cast_slab_by_slab() -> None:
    source_grid, target_grid = CASES["back to a finer, flipped grid"]
    probabilities = np.random.default_rng(4).random(source_grid.size_zyx)  # float64
    expected = (
        resampled_whole(probabilities.astype(np.float32), source_grid, target_grid, sitk.sitkLinear, 0.0)
        > 0.5
    )
    seen: list[np.dtype] = []

    def threshold(slab: np.ndarray) -> np.ndarray:
        seen.append(slab.dtype)
        return slab > 0.5

    got = resample_by_slabs(
        probabilities,
        source_grid,
        target_grid,
        interpolator=sitk.sitkLinear,
        default=0.0,
        convert=threshold,
        out_dtype=bool,
        source_dtype=np.float32,
        slab_voxels=3 * 40 * 44,
    )
    assert got.dtype == bool and len(seen) == 13  # 37 slices, 3 at a time
    np.testing.assert_array_equal(got, expected)

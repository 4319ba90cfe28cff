"""Resample a volume onto another grid a slab of output slices at a time.

Bringing a CT onto a model's grid and the model's probabilities back onto the CT's grid are the
largest arrays of model mode: done whole, SimpleITK holds a copy of the source image and the
whole float32 output at once (at 512 x 512 x 556, 580 MB for the probabilities on the CT grid
alone). Here each slab of output slices is resampled from only the source slices it needs,
plus a margin, and converted (thresholded, cast) before the next: memory is the output array
plus one slab. Linear or nearest interpolation of an output voxel reads only the source voxels
around its position, so every voxel is the one a whole-volume ``sitk.Resample`` gives (tests
compare the two on oblique, flipped and partly outside grids), except at
exact ties: a slab's origin is computed anew, so where an output centre falls exactly half-way
between two source slices (nearest neighbour) or exactly on the source's outer half-voxel edge,
rounding may break the tie the other way (either answer is one a resample could give).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import SimpleITK as sitk

from pipeline.geometry import Geometry, float3

SLAB_VOXELS = 1 << 22
"""Output voxels per slab (4 M: 16 slices of 512 x 512; 16 MB of float32)."""

_MARGIN_SLICES = 2


def resample_by_slabs(
    source: np.ndarray,
    source_grid: Geometry,
    target_grid: Geometry,
    *,
    interpolator: int,
    default: float,
    convert: Callable[[np.ndarray], np.ndarray],
    out_dtype: type | np.dtype,
    source_dtype: type | np.dtype | None = None,
    slab_voxels: int = SLAB_VOXELS,
) -> np.ndarray:
    """``convert(resampled slab)`` for every slab of ``target_grid``, stacked ``[z, y, x]``.

    ``source`` is ``[z, y, x]`` on ``source_grid`` (any numeric dtype, cast slab by slab to
    ``source_dtype`` when given; it is read, never copied whole); slabs are resampled to float32
    with ``interpolator`` (``default`` outside the source) and ``convert`` turns each into
    ``out_dtype`` (for example a threshold to bool).
    """
    depth, rows, cols = (int(v) for v in target_grid.size_zyx)
    out = np.empty((depth, rows, cols), dtype=out_dtype)
    step = max(1, slab_voxels // max(1, rows * cols))
    for z0 in range(0, depth, step):
        z1 = min(depth, z0 + step)
        slab = slab_grid(target_grid, z0, z1)
        lo, hi = _source_slices(source_grid, slab)
        if lo >= hi:  # the slab lies wholly outside the source
            resampled = np.full((z1 - z0, rows, cols), default, dtype=np.float32)
        else:
            pixels = np.asarray(source[lo:hi], dtype=source_dtype)
            if pixels.dtype == bool:  # SimpleITK has no bool pixels
                pixels = pixels.view(np.uint8)
            part = slab_grid(source_grid, lo, hi).apply_to(sitk.GetImageFromArray(pixels))
            image = sitk.Resample(
                part,
                slab.empty_image(sitk.sitkFloat32),
                sitk.Transform(),
                interpolator,
                default,
                sitk.sitkFloat32,
            )
            resampled = sitk.GetArrayViewFromImage(image)
        out[z0:z1] = convert(resampled)
    return out


def slab_grid(grid: Geometry, z0: int, z1: int) -> Geometry:
    """Slices ``z0:z1`` of ``grid`` as a grid of their own."""
    return Geometry(
        size_zyx=(z1 - z0, grid.size_zyx[1], grid.size_zyx[2]),
        origin_mm=float3(grid.index_to_physical(np.array([[z0, 0, 0]]))[0]),
        spacing_mm=grid.spacing_mm,
        direction=grid.direction,
    )


def _source_slices(source_grid: Geometry, slab: Geometry) -> tuple[int, int]:
    """The source slices ``[lo, hi)`` that interpolating anywhere in ``slab`` may read."""
    corners = np.array(
        [
            [z, y, x]
            for z in (-0.5, slab.size_zyx[0] - 0.5)
            for y in (-0.5, slab.size_zyx[1] - 0.5)
            for x in (-0.5, slab.size_zyx[2] - 0.5)
        ]
    )
    physical = slab.index_to_physical(corners)
    ijk = (physical - np.asarray(source_grid.origin_mm)) @ source_grid.direction_matrix
    k = ijk[:, 2] / source_grid.spacing_mm[2]
    lo = max(0, int(np.floor(k.min())) - _MARGIN_SLICES)
    hi = min(int(source_grid.size_zyx[0]), int(np.ceil(k.max())) + 1 + _MARGIN_SLICES)
    return lo, hi

"""Grids and a whole-volume SimpleITK resample, to check slab-by-slab resampling against."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from pipeline.geometry import Geometry


def grid(size_zyx, origin, spacing, direction=np.eye(3)) -> Geometry:  # type: ignore[no-untyped-def]
    """A :class:`Geometry` from plain numbers (``direction`` a 3 x 3 matrix)."""
    return Geometry(
        size_zyx=tuple(int(v) for v in size_zyx),
        origin_mm=tuple(float(v) for v in origin),
        spacing_mm=tuple(float(v) for v in spacing),
        direction=tuple(float(v) for v in np.asarray(direction).ravel()),
    )


def resampled_whole(
    source: np.ndarray, source_grid: Geometry, target_grid: Geometry, interpolator: int, default: float
) -> np.ndarray:
    """``source`` resampled onto ``target_grid`` in one ``sitk.Resample`` (float32 out)."""
    image = source_grid.apply_to(sitk.GetImageFromArray(source))
    out = sitk.Resample(
        image,
        target_grid.empty_image(sitk.sitkFloat32),
        sitk.Transform(),
        interpolator,
        default,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out)

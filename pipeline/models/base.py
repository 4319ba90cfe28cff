"""What every segmentation model gives the pipeline: a node mask on the CT's own grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from pipeline.dicom.volume import CtVolume, Geometry
from pipeline.errors import ModelError

__all__ = ["ModelError", "Prediction", "SegmentationModel", "probabilities_to_ct_grid", "resample_ct"]

@dataclass
class Prediction:
    """A bool ``[z, y, x]`` mask on the CT grid, and seconds spent in each step."""

    mask: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


class SegmentationModel(Protocol):
    """Anything that turns a CT volume into a node mask on the same grid."""

    name: str
    version: str

    def predict(self, ct: CtVolume) -> Prediction: ...


def probabilities_to_ct_grid(
    probabilities: np.ndarray, source: Geometry, target: Geometry, *, threshold: float = 0.5
) -> np.ndarray:
    """Resample foreground probabilities linearly onto ``target``, then threshold (> threshold)."""
    image = source.apply_to(sitk.GetImageFromArray(probabilities.astype(np.float32, copy=False)))
    if _same_grid(source, target):
        return probabilities > threshold
    reference = target.apply_to(sitk.Image([int(s) for s in target.size_zyx[::-1]], sitk.sitkFloat32))
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayViewFromImage(resampled) > threshold


def _same_grid(a: Geometry, b: Geometry) -> bool:
    return (
        a.size_zyx == b.size_zyx
        and np.allclose(a.origin_mm, b.origin_mm, atol=1e-4)
        and np.allclose(a.spacing_mm, b.spacing_mm, atol=1e-6)
        and np.allclose(a.direction, b.direction, atol=1e-6)
    )


def resample_ct(
    ct: CtVolume, spacing_zyx_mm: tuple[float, float, float] | None
) -> tuple[np.ndarray, Geometry]:
    """CT HU (float32) on a grid of the given spacing covering the same extent (linear)."""
    if spacing_zyx_mm is None:
        return ct.hu.astype(np.float32, copy=False), ct.geometry
    spacing_xyz = tuple(float(v) for v in spacing_zyx_mm[::-1])
    extent = np.asarray(ct.geometry.size_zyx[::-1]) * np.asarray(ct.geometry.spacing_mm)
    size_xyz = [max(1, int(round(e / s))) for e, s in zip(extent, spacing_xyz, strict=True)]
    # keep the volume centred: the first voxel centre moves by half the difference in voxel size
    shift = (np.asarray(spacing_xyz) - np.asarray(ct.geometry.spacing_mm)) / 2.0
    origin = np.asarray(ct.geometry.origin_mm) + ct.geometry.direction_matrix @ shift
    target = Geometry(
        size_zyx=tuple(size_xyz[::-1]),  # type: ignore[arg-type]
        origin_mm=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        spacing_mm=spacing_xyz,  # type: ignore[arg-type]
        direction=ct.geometry.direction,
    )
    reference = target.apply_to(sitk.Image(size_xyz, sitk.sitkFloat32))
    image = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled), target

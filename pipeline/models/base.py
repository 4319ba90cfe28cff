"""What every segmentation model gives the pipeline: a node mask on the CT's own grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from pipeline.dicom.volume import CtVolume, Geometry, float3, int3
from pipeline.errors import ModelError

__all__ = ["ModelError", "Prediction", "SegmentationModel", "probabilities_to_ct_grid", "resample_ct"]


@dataclass(frozen=True)
class Prediction:
    """A bool ``[z, y, x]`` mask on the CT grid, and the seconds the model spent running the
    network (``inference_s``) and bringing its output back to the CT grid (``postprocess_s``)."""

    mask: np.ndarray
    inference_s: float
    postprocess_s: float = 0.0


class SegmentationModel(Protocol):
    """Anything that turns a CT volume into a node mask on the same grid."""

    name: str
    version: str

    def predict(self, ct: CtVolume) -> Prediction: ...


def probabilities_to_ct_grid(
    probabilities: np.ndarray, source: Geometry, target: Geometry, *, threshold: float = 0.5
) -> np.ndarray:
    """Resample foreground probabilities linearly onto ``target``, then threshold (> threshold)."""
    if source.same_grid(target):
        return probabilities > threshold
    image = source.apply_to(sitk.GetImageFromArray(probabilities.astype(np.float32, copy=False)))
    reference = target.empty_image(sitk.sitkFloat32)
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayViewFromImage(resampled) > threshold


def resample_ct(
    ct: CtVolume, spacing_zyx_mm: tuple[float, float, float] | None
) -> tuple[np.ndarray, Geometry]:
    """CT HU (float32) on a grid of the given spacing covering the same extent (linear)."""
    if spacing_zyx_mm is None:
        return ct.hu.astype(np.float32, copy=False), ct.geometry
    spacing_xyz = float3(spacing_zyx_mm[::-1])
    extent = np.asarray(ct.geometry.size_zyx[::-1]) * np.asarray(ct.geometry.spacing_mm)
    size_xyz = int3(max(1, int(round(e / s))) for e, s in zip(extent, spacing_xyz, strict=True))
    # keep the volume centred: the first voxel centre moves by half the difference in voxel size
    shift = (np.asarray(spacing_xyz) - np.asarray(ct.geometry.spacing_mm)) / 2.0
    origin = np.asarray(ct.geometry.origin_mm) + ct.geometry.direction_matrix @ shift
    target = Geometry(
        size_zyx=int3(size_xyz[::-1]),
        origin_mm=float3(origin),
        spacing_mm=spacing_xyz,
        direction=ct.geometry.direction,
    )
    reference = target.empty_image(sitk.sitkFloat32)
    image = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled), target

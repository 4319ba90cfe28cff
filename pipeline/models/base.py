"""What every segmentation model gives the pipeline: a node mask on the CT's own grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from pipeline.dicom.volume import CtVolume, Geometry, float3, int3
from pipeline.errors import ModelError
from pipeline.models.slabs import resample_by_slabs

__all__ = [
    "ModelError",
    "Prediction",
    "SavedPrediction",
    "SegmentationModel",
    "probabilities_to_ct_grid",
    "resample_ct",
]


@dataclass(frozen=True)
class Prediction:
    """A model's answer, and the seconds it spent running the network (``inference_s``) and
    bringing its output back to the CT grid (``postprocess_s``).

    Either a bool ``[z, y, x]`` ``mask`` on the CT grid, or foreground ``probabilities`` on the
    model's own ``grid``, which :meth:`on_ct_grid` resamples and thresholds. The second lets the
    pipeline do that CPU work in the series' measuring child, so the worker that holds the model
    never holds a CT-grid array (and, on a GPU, is free for the next series' windows sooner)."""

    inference_s: float
    postprocess_s: float = 0.0
    mask: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    grid: Geometry | None = None
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if (self.mask is None) == (self.probabilities is None) or (self.probabilities is None) != (
            self.grid is None
        ):
            raise ValueError("a Prediction holds a mask, or probabilities with their grid")

    def on_ct_grid(self, target: Geometry) -> np.ndarray:
        """The bool mask on ``target`` (the CT's grid)."""
        if self.mask is not None:
            return self.mask
        assert self.probabilities is not None and self.grid is not None
        return probabilities_to_ct_grid(self.probabilities, self.grid, target, threshold=self.threshold)


@dataclass(frozen=True)
class SavedPrediction:
    """A :class:`Prediction` left in a ``.npy`` file for another process: the CT-grid mask, or the
    model-grid probabilities with their ``grid`` (``None`` for a mask)."""

    path: str
    grid: Geometry | None = None
    threshold: float = 0.5

    @classmethod
    def save(cls, prediction: Prediction, path: str) -> SavedPrediction:
        if prediction.mask is not None:
            np.save(path, np.asarray(prediction.mask, dtype=bool))
            return cls(path)
        np.save(path, np.asarray(prediction.probabilities, dtype=np.float32))
        return cls(path, prediction.grid, prediction.threshold)

    def on_ct_grid(self, target: Geometry) -> np.ndarray:
        """The bool mask on ``target``: the file mapped (a mask), or resampled a slab at a time."""
        if self.grid is None:
            return np.load(self.path, mmap_mode="c")
        return probabilities_to_ct_grid(
            np.load(self.path, mmap_mode="r"), self.grid, target, threshold=self.threshold
        )


class SegmentationModel(Protocol):
    """Anything that turns a CT volume into a node mask on the same grid."""

    name: str
    version: str

    def predict(self, ct: CtVolume) -> Prediction: ...


def probabilities_to_ct_grid(
    probabilities: np.ndarray, source: Geometry, target: Geometry, *, threshold: float = 0.5
) -> np.ndarray:
    """Resample foreground probabilities linearly onto ``target``, then threshold (> threshold);
    a slab at a time, so that no float32 copy of the CT grid is made."""
    if source.same_grid(target):
        return probabilities > threshold
    return resample_by_slabs(
        probabilities,
        source,
        target,
        interpolator=sitk.sitkLinear,
        default=0.0,
        convert=lambda slab: slab > threshold,
        out_dtype=bool,
        source_dtype=np.float32,
    )


MAX_MODEL_GRID_VOXELS = 256 * 2**20
"""The most voxels a series may have on a model's grid (268 million: 1.8 times LNQ's largest CT,
556 x 512 x 512, and 3.9 times it at nnU-Net's usual 2.5 x 0.8 x 0.8 mm). The worker that holds
the model holds several float32 copies on that grid (input, stitched output, its weights), and
nnU-Net's resampling needs over 20 bytes a voxel: a sidecar or plans spacing a hundred times too
fine would otherwise make that worker, and with it the whole run, run out of memory."""


def model_grid_shape(
    size_zyx: Sequence[int],
    spacing_zyx_mm: Sequence[float],
    model_spacing_zyx_mm: Sequence[float],
    *,
    series_uid: str | None,
) -> tuple[int, int, int]:
    """The ``(z, y, x)`` size of a volume's extent at the model's spacing; a :class:`ModelError`
    naming the series when it has more than :data:`MAX_MODEL_GRID_VOXELS`."""
    extent_zyx = np.asarray(size_zyx, dtype=float) * np.asarray(spacing_zyx_mm, dtype=float)
    shape = int3(max(1, int(round(e / s))) for e, s in zip(extent_zyx, model_spacing_zyx_mm, strict=True))
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > MAX_MODEL_GRID_VOXELS:
        raise ModelError(
            f"the model's grid at {tuple(float(v) for v in model_spacing_zyx_mm)} mm (z, y, x) would hold "
            f"{shape[0]} x {shape[1]} x {shape[2]} = {voxels:,} voxels, more than the "
            f"{MAX_MODEL_GRID_VOXELS:,} allowed per series; is the model's spacing in millimetres?",
            series_uid=series_uid,
        )
    return shape


def resample_ct(
    ct: CtVolume, spacing_zyx_mm: tuple[float, float, float] | None
) -> tuple[np.ndarray, Geometry]:
    """CT HU (float32) on a grid of the given spacing covering the same extent (linear); a slab at
    a time, so that the CT is neither copied nor cast whole."""
    if spacing_zyx_mm is None:
        return ct.hu.astype(np.float32, copy=False), ct.geometry
    spacing_xyz = float3(spacing_zyx_mm[::-1])
    size_zyx = model_grid_shape(
        ct.geometry.size_zyx,
        ct.geometry.spacing_mm[::-1],
        spacing_zyx_mm,
        series_uid=ct.series_uid or None,
    )
    size_xyz = int3(size_zyx[::-1])
    # keep the volume centred: the first voxel centre moves by half the difference in voxel size
    shift = (np.asarray(spacing_xyz) - np.asarray(ct.geometry.spacing_mm)) / 2.0
    origin = np.asarray(ct.geometry.origin_mm) + ct.geometry.direction_matrix @ shift
    target = Geometry(
        size_zyx=int3(size_xyz[::-1]),
        origin_mm=float3(origin),
        spacing_mm=spacing_xyz,
        direction=ct.geometry.direction,
    )
    resampled = resample_by_slabs(
        ct.hu,
        ct.geometry,
        target,
        interpolator=sitk.sitkLinear,
        default=-1024.0,
        convert=lambda slab: slab,
        out_dtype=np.float32,
    )
    return resampled, target

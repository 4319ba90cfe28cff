"""What every segmentation model gives the pipeline: a node mask on the CT's own grid."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk

from pipeline.errors import ModelError
from pipeline.geometry import CtVolume, Geometry, float3, int3
from pipeline.resample import resample_by_slabs, slab_grid

ForwardLock = AbstractContextManager[Any]
"""What a model holds while its network runs (a ``threading.Lock``, or the model host's wrapper
of one that counts how long each series waits for it)."""

__all__ = [
    "ForwardLock",
    "ModelError",
    "Prediction",
    "SavedPrediction",
    "SegmentationModel",
    "check_finite",
    "ct_rows",
    "model_grid",
    "probabilities_to_ct_grid",
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
    saved_to: str | None = None
    """The ``.npy`` file the model already wrote the probabilities to (``probabilities`` is then
    that file, mapped read-only), when it was asked to (``predict(ct, save_to=...)``)."""

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
        if prediction.saved_to is not None and _same_file(prediction.saved_to, path):
            return cls(path, prediction.grid, prediction.threshold)
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


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (writing one while the other is mapped would truncate it
    under the mapping)."""
    try:
        return os.path.samefile(a, b)
    except FileNotFoundError:
        return False


def check_finite(values: Any, *, what: str, series_uid: str | None, where: str = "") -> None:
    """A :class:`ModelError` naming the series when a model's output (a numpy array or a torch
    tensor) holds NaN or infinities.

    Caught where they appear: a NaN is thresholded to background (an empty prediction: the
    series would be ``ok`` with no nodes and DSC 0), NaN logits make an argmax pick a label
    at random, and an infinite logit, which a sigmoid hides, turns into NaN once windows are
    blended."""
    if not hasattr(values, "is_floating_point"):  # not a torch tensor: a numpy array or scalar
        values = np.asarray(values)
        if values.dtype.kind not in "fc":
            return
        n_nan = n_inf = 0
        rows = values if values.ndim > 1 else values.reshape(1, -1)
        step = max(1, _CHECK_ELEMENTS // max(1, rows[0].size))
        for start in range(0, len(rows), step):  # a bool copy of a few slices at a time, not of all
            chunk = rows[start : start + step]
            if not np.isfinite(chunk).all():
                n_nan += int(np.isnan(chunk).sum())
                n_inf += int(np.isinf(chunk).sum())
        total = values.size
    else:  # a torch tensor (torch is imported only by the models, never here)
        if not values.is_floating_point() or bool(values.isfinite().all()):
            return
        n_nan, n_inf, total = int(values.isnan().sum()), int(values.isinf().sum()), values.numel()
    if n_nan or n_inf:
        raise ModelError(
            f"the model returned non-finite {what}: {n_nan:,} NaN and {n_inf:,} infinite of "
            f"{total:,} values{' ' + where if where else ''}",
            series_uid=series_uid,
        )


_CHECK_ELEMENTS = 1 << 22


class SegmentationModel(Protocol):
    """Anything that turns a CT volume into a node mask on the same grid.

    ``save_to``: a ``.npy`` path the model may write model-grid probabilities to as it makes them
    (saying so in :attr:`Prediction.saved_to`), so that it never holds them whole; a model that
    does not is free to ignore it."""

    name: str
    version: str

    def predict(self, ct: CtVolume, *, save_to: str | None = None) -> Prediction: ...


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


def model_grid(ct: CtVolume, spacing_zyx_mm: tuple[float, float, float] | None) -> Geometry:
    """The grid of the given spacing that covers the CT's extent, centred on it (the CT's own
    grid when ``spacing_zyx_mm`` is None)."""
    if spacing_zyx_mm is None:
        return ct.geometry
    spacing_xyz = float3(spacing_zyx_mm[::-1])
    size_zyx = model_grid_shape(
        ct.geometry.size_zyx,
        ct.geometry.spacing_mm[::-1],
        spacing_zyx_mm,
        series_uid=ct.series_uid or None,
    )
    # keep the volume centred: the first voxel centre moves by half the difference in voxel size
    shift = (np.asarray(spacing_xyz) - np.asarray(ct.geometry.spacing_mm)) / 2.0
    origin = np.asarray(ct.geometry.origin_mm) + ct.geometry.direction_matrix @ shift
    return Geometry(
        size_zyx=size_zyx,
        origin_mm=float3(origin),
        spacing_mm=spacing_xyz,
        direction=ct.geometry.direction,
    )


def ct_rows(ct: CtVolume, grid: Geometry, z0: int, z1: int) -> np.ndarray:
    """Slices ``z0:z1`` of the CT's HU on ``grid`` (float32, linear; -1024 outside the CT), from
    only the CT slices they need: the model-grid input is made a band at a time, never whole."""
    if grid is ct.geometry:
        return ct.hu[z0:z1].astype(np.float32)
    return resample_by_slabs(
        ct.hu,
        ct.geometry,
        slab_grid(grid, z0, z1),
        interpolator=sitk.sitkLinear,
        default=-1024.0,
        convert=lambda slab: slab,
        out_dtype=np.float32,
    )

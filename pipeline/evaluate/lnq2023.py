"""Per-case scoring by the LNQ2023 challenge's rules.

Prediction and reference on the same grid; every non-zero voxel is foreground
(the challenge casts to UInt8 with foreground 1); no resampling, no
connected-component step, no size filter.

- DSC: ``2 |P and R| / (|P| + |R|)`` over voxels, as SimpleITK's
  ``LabelOverlapMeasuresImageFilter().GetDiceCoefficient()`` computes it.
- Surfaces are what SimpleITK's ``LabelContour`` marks (face connectivity,
  background 0): foreground voxels with a face neighbour *inside the image*
  that is background (beyond the image border is not background).
- ASSD: the mean Euclidean distance in mm from each prediction surface voxel to
  the nearest reference surface voxel, and the same from the reference to the
  prediction, averaged (two means, not pooled).
- An empty prediction (or an empty reference) gives DSC 0 and ASSD NaN; so does,
  for ASSD, a mask that fills the whole image and so has no surface.

The challenge computed the distances with SimpleITK's ``SignedMaurerDistanceMap``
over the whole image, whose float32 output is off by up to about 1e-6 relative
(so the ASSD of two identical masks came out as 9e-7 mm, not 0). Here the
distances between surface voxel centres are computed exactly in float64, with
a k-d tree over the other mask's surface voxels: the same definition, without
rounding, and without distance maps over the whole image (the surface voxels
of a few hundred scattered nodes are a tiny fraction of 145 M voxels). Only
surfaces of more than :data:`KD_TREE_MAX_SURFACE_VOXELS` voxels (speckle over
the whole image) go back to the challenge's distance maps over the slices that
hold the surfaces, with exact zeros where the two surfaces meet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.spatial import cKDTree

from pipeline.errors import ScoreError
from pipeline.geometry import Geometry

INTEGER_PIXEL_TYPES = frozenset(
    {
        sitk.sitkUInt8,
        sitk.sitkInt8,
        sitk.sitkUInt16,
        sitk.sitkInt16,
        sitk.sitkUInt32,
        sitk.sitkInt32,
        sitk.sitkUInt64,
        sitk.sitkInt64,
    }
)
FLOAT_PIXEL_TYPES = frozenset({sitk.sitkFloat32, sitk.sitkFloat64})


@dataclass(frozen=True)
class CaseScore:
    dsc: float
    assd_mm: float  # NaN when either mask is empty

    def as_json(self) -> dict[str, float | None]:
        return {"dsc": self.dsc, "assd_mm": None if math.isnan(self.assd_mm) else self.assd_mm}


def check_label_image(image: sitk.Image, name: str = "image", *, integers: bool = True) -> None:
    """Refuse what is not a 3-D image of integer labels, saying what was expected.

    Float images are accepted when every value is a whole number (labels saved as
    float); a float image with fractional values is a probability map, which has
    to be thresholded before it can be scored. ``integers=False`` checks only the
    dimension and the number of components (for an image about to be thresholded).
    """
    if image.GetDimension() != 3:
        raise ScoreError(
            f"{name} is a {image.GetDimension()}-D image of size {image.GetSize()}; "
            "expected a 3-D label image (columns x rows x slices)"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ScoreError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "expected one label per voxel"
        )
    pixel = image.GetPixelID()
    if pixel in INTEGER_PIXEL_TYPES:
        return
    if pixel not in FLOAT_PIXEL_TYPES:
        raise ScoreError(f"{name} has pixel type {image.GetPixelIDTypeAsString()}; expected integer labels")
    if not integers:
        return
    values = sitk.GetArrayViewFromImage(image)
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise ScoreError(
            f"{name} holds non-integer values (for example {float(fractional[0]):.4g}; "
            f"range {float(np.nanmin(values)):.4g} to {float(np.nanmax(values)):.4g}): a probability "
            "map, not labels; threshold it (for example at 0.5) before scoring"
        )


def binary_uint8(image: sitk.Image) -> sitk.Image:
    """Foreground 1 wherever the label is not 0, as UInt8 (the challenge's cast)."""
    return sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)


def check_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    """The challenge scores on one grid: refuse images that do not share it (``ScoreError``)."""
    problems = Geometry.from_sitk(a).grid_differences(Geometry.from_sitk(b))
    if problems:
        raise ScoreError("prediction and reference are not on the same grid: " + "; ".join(problems))


SPARSE_MAX_VOXELS = 3_000_000
"""A mask with at most this many foreground voxels is handled as a list of voxel indices;
a larger one (a large organ, speckle over the whole image) as an image."""

KD_TREE_MAX_SURFACE_VOXELS = 1_500_000
"""Above this many surface voxels (both masks together, e.g. speckle over the whole image), a
k-d tree costs more than distance maps over the grid, which are used instead."""


def score_case(prediction: sitk.Image, reference: sitk.Image) -> CaseScore:
    """DSC and ASSD of one case, by the LNQ2023 rules (see the module docstring)."""
    check_label_image(prediction, "prediction")
    check_label_image(reference, "reference")
    check_same_grid(prediction, reference)
    pred = sitk.GetArrayViewFromImage(prediction)
    ref = sitk.GetArrayViewFromImage(reference)
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if n_pred == 0 or n_ref == 0:
        return CaseScore(dsc=0.0, assd_mm=math.nan)
    pred_at = flat_nonzero(pred) if n_pred <= SPARSE_MAX_VOXELS else None
    ref_at = flat_nonzero(ref) if n_ref <= SPARSE_MAX_VOXELS else None
    if ref_at is not None:
        both = int(np.count_nonzero(pred.reshape(-1)[ref_at]))
    elif pred_at is not None:
        both = int(np.count_nonzero(ref.reshape(-1)[pred_at]))
    else:
        both = int(np.count_nonzero((pred != 0) & (ref != 0)))
    dsc = 2.0 * both / (n_pred + n_ref)
    spacing_zyx = np.asarray(prediction.GetSpacing(), dtype=float)[::-1]
    pred_surface = _surface(prediction, pred_at)
    ref_surface = _surface(reference, ref_at)
    return CaseScore(dsc=float(dsc), assd_mm=assd_mm(pred_surface, ref_surface, pred.shape, spacing_zyx))


def _surface(image: sitk.Image, foreground_at: np.ndarray | None) -> np.ndarray:
    """Flat indices of the surface voxels: from the foreground's indices, or (for a large
    foreground) by shifting the whole mask along each axis."""
    labels = sitk.GetArrayViewFromImage(image)
    if foreground_at is not None:
        return surface_voxels(labels, foreground_at)
    foreground = labels != 0
    background_beside = np.zeros(foreground.shape, dtype=bool)
    for axis in range(3):
        low = tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
        high = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        background_beside[high] |= ~foreground[low]  # the neighbour before is background
        background_beside[low] |= ~foreground[high]  # the neighbour after is background
    return np.flatnonzero(foreground & background_beside)


def flat_nonzero(array: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(array)`` (ascending flat indices, C order), about six times faster on
    large, mostly empty integer arrays: 8-byte words are tested first, then the bytes of the
    few non-zero words."""
    flat = array.reshape(-1)
    if flat.dtype.kind not in "uib" or flat.itemsize not in (1, 2, 4) or not flat.flags.c_contiguous:
        return np.flatnonzero(flat)  # floats: -0.0 is zero but not zero bits
    per_word = 8 // flat.itemsize
    whole = flat.size // per_word * per_word
    words = np.flatnonzero(flat[:whole].view(np.uint64))
    rows, cols = np.nonzero(flat[:whole].reshape(-1, per_word)[words])
    found = words[rows] * per_word + cols
    tail = np.flatnonzero(flat[whole:])
    return np.concatenate([found, tail + whole]) if tail.size else found


def surface_voxels(labels: np.ndarray, foreground_at: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Flat indices (ascending) of the surface voxels among ``foreground_at``, the flat indices
    of the non-zero voxels of ``labels``: those with a face neighbour inside the image that is
    background, as ``LabelContour`` decides. Done ``chunk`` voxels at a time."""
    shape = labels.shape
    flat = labels.reshape(-1)
    strides = (shape[1] * shape[2], shape[2], 1)
    parts = []
    for first in range(0, foreground_at.size, chunk):
        at = foreground_at[first : first + chunk]
        coords = np.unravel_index(at, shape)
        on_surface = np.zeros(at.size, dtype=bool)
        for coord, size, stride in zip(coords, shape, strides, strict=True):
            # A neighbour beyond the border is replaced by the voxel itself (foreground).
            on_surface |= flat[np.where(coord > 0, at - stride, at)] == 0
            on_surface |= flat[np.where(coord < size - 1, at + stride, at)] == 0
        parts.append(at[on_surface])
    return np.concatenate(parts) if parts else foreground_at[:0]


def assd_mm(
    pred_surface: np.ndarray, ref_surface: np.ndarray, shape: tuple[int, ...], spacing_zyx: np.ndarray
) -> float:
    """The average of the two directed mean surface distances, from the surfaces' flat indices
    (ascending) on a grid of ``shape``; NaN when a surface is empty."""
    if pred_surface.size == 0 or ref_surface.size == 0:
        return math.nan
    if pred_surface.size + ref_surface.size <= KD_TREE_MAX_SURFACE_VOXELS:
        pred_mm = _positions_mm(pred_surface, shape, spacing_zyx)
        ref_mm = _positions_mm(ref_surface, shape, spacing_zyx)
        pred_to_ref = nearest_distances(pred_mm, ref_mm)
        ref_to_pred = nearest_distances(ref_mm, pred_mm)
    else:
        pred_to_ref, ref_to_pred = _distances_on_grid(pred_surface, ref_surface, shape, spacing_zyx)
    return float(pred_to_ref.mean() / 2.0 + ref_to_pred.mean() / 2.0)


def _positions_mm(flat_indices: np.ndarray, shape: tuple[int, ...], spacing_zyx: np.ndarray) -> np.ndarray:
    """``(N, 3)`` positions in mm: ``[z, y, x]`` index times spacing (distances need no origin,
    and the direction is orthonormal)."""
    coords = np.unravel_index(flat_indices, shape)
    return np.column_stack([c * s for c, s in zip(coords, spacing_zyx, strict=True)])


def nearest_distances(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Euclidean distance from each point to its nearest target (float64, exact 0 on a target)."""
    distances, _ = cKDTree(targets).query(points, k=1, workers=-1)
    return np.asarray(distances, dtype=float)


def _distances_on_grid(
    pred_surface: np.ndarray, ref_surface: np.ndarray, shape: tuple[int, ...], spacing_zyx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both directed distances from SimpleITK distance maps (the challenge's own computation, in
    float32) over the slices that hold the two surfaces; exactly 0 where the surfaces meet."""
    plane = int(shape[1]) * int(shape[2])
    first = min(int(pred_surface[0]), int(ref_surface[0])) // plane  # indices are ascending
    last = max(int(pred_surface[-1]), int(ref_surface[-1])) // plane
    box = (last - first + 1, int(shape[1]), int(shape[2]))
    pred_in_box, ref_in_box = pred_surface - first * plane, ref_surface - first * plane

    def directed(query: np.ndarray, target: np.ndarray) -> np.ndarray:
        surface = np.zeros(box, dtype=np.uint8)
        surface.reshape(-1)[target] = 1
        image = sitk.GetImageFromArray(surface)
        image.SetSpacing(tuple(float(v) for v in spacing_zyx[::-1]))
        distance = sitk.SignedMaurerDistanceMap(image, squaredDistance=False, useImageSpacing=True)
        values = np.abs(sitk.GetArrayViewFromImage(distance).reshape(-1)[query].astype(np.float64))
        values[surface.reshape(-1)[query] == 1] = 0.0  # float32 noise of about 1e-6 otherwise
        return values

    return directed(pred_in_box, ref_in_box), directed(ref_in_box, pred_in_box)

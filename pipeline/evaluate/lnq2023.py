"""Per-case scoring exactly as the LNQ2023 challenge's evaluation code scores.

Prediction and reference on the same grid, cast to UInt8 with foreground 1; no
resampling, no connected-component step, no size filter.

- DSC: SimpleITK ``LabelOverlapMeasuresImageFilter().GetDiceCoefficient()``.
- ASSD: surfaces are ``LabelContour`` (face connectivity, background 0);
  distance maps are ``abs(SignedMaurerDistanceMap(surface, squaredDistance=False,
  useImageSpacing=True))`` in mm; the mean distance of the prediction's surface
  voxels to the reference surface and that of the reference's to the
  prediction's are averaged (two means, not pooled).
- An empty prediction (or an empty reference) gives DSC 0 and ASSD NaN.

Both images are first cropped to the union bounding box of the two masks plus
one voxel of background (clamped at the image border). This changes no score:
every surface voxel is inside the crop, Maurer's map is the exact Euclidean
distance to the nearest one, and the margin keeps contours as they were. On a
512 x 512 x 556 series it turns distance maps of 145 M voxels into ones of the
nodes' size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

GEOMETRY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class CaseScore:
    dsc: float
    assd_mm: float  # NaN when either mask is empty

    def as_json(self) -> dict[str, float | None]:
        return {"dsc": self.dsc, "assd_mm": None if math.isnan(self.assd_mm) else self.assd_mm}


def binary_uint8(image: sitk.Image) -> sitk.Image:
    """Foreground 1 wherever the label is not 0, as UInt8 (the challenge's cast)."""
    return sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)


def check_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    """The challenge scores on one grid: refuse images that do not share it."""
    problems = []
    if a.GetSize() != b.GetSize():
        problems.append(f"size {a.GetSize()} vs {b.GetSize()}")
    for name, x, y in (
        ("spacing", a.GetSpacing(), b.GetSpacing()),
        ("origin", a.GetOrigin(), b.GetOrigin()),
        ("direction", a.GetDirection(), b.GetDirection()),
    ):
        if not np.allclose(x, y, atol=GEOMETRY_TOLERANCE):
            problems.append(f"{name} {tuple(round(v, 5) for v in x)} vs {tuple(round(v, 5) for v in y)}")
    if problems:
        raise ValueError("prediction and reference are not on the same grid: " + "; ".join(problems))


def score_case(prediction: sitk.Image, reference: sitk.Image) -> CaseScore:
    """DSC and ASSD of one case, by the LNQ2023 rules."""
    check_same_grid(prediction, reference)
    pred, ref = binary_uint8(prediction), binary_uint8(reference)
    if _is_empty(pred) or _is_empty(ref):
        return CaseScore(dsc=0.0, assd_mm=math.nan)
    pred, ref = _crop_to_union(pred, ref)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(ref, pred)
    return CaseScore(dsc=float(overlap.GetDiceCoefficient()), assd_mm=_assd(pred, ref))


def _crop_to_union(pred: sitk.Image, ref: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    either = sitk.GetArrayViewFromImage(pred) | sitk.GetArrayViewFromImage(ref)
    lower_zyx, upper_zyx = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(either.any(axis=other))
        lower_zyx.append(max(int(present[0]) - 1, 0))
        upper_zyx.append(min(int(present[-1]) + 1, either.shape[axis] - 1))
    index = [int(v) for v in lower_zyx[::-1]]
    size = [int(u - lo + 1) for lo, u in zip(lower_zyx[::-1], upper_zyx[::-1], strict=True)]
    cropped_pred = sitk.RegionOfInterest(pred, size, index)
    cropped_ref = sitk.RegionOfInterest(ref, size, index)
    cropped_pred.CopyInformation(cropped_ref)  # one grid (already checked within tolerance)
    return cropped_pred, cropped_ref


def _is_empty(image: sitk.Image) -> bool:
    stats = sitk.StatisticsImageFilter()
    stats.Execute(image)
    return stats.GetMaximum() == 0


def _surface_distance_map(surface: sitk.Image) -> np.ndarray:
    distance = sitk.SignedMaurerDistanceMap(surface, squaredDistance=False, useImageSpacing=True)
    return np.abs(sitk.GetArrayViewFromImage(distance))


def _assd(pred: sitk.Image, ref: sitk.Image) -> float:
    pred_surface = sitk.LabelContour(pred)
    ref_surface = sitk.LabelContour(ref)
    pred_on = sitk.GetArrayViewFromImage(pred_surface) > 0
    ref_on = sitk.GetArrayViewFromImage(ref_surface) > 0
    pred_to_ref = _surface_distance_map(ref_surface)[pred_on]
    ref_to_pred = _surface_distance_map(pred_surface)[ref_on]
    return float(pred_to_ref.mean() / 2.0 + ref_to_pred.mean() / 2.0)

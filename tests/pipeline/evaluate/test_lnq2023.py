"""LNQ2023 scoring against an independent implementation written here with numpy and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from pipeline.evaluate.lnq2023 import score_case

SPACING_XYZ = (0.72, 0.8, 2.5)


def independent_scores(
    pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, ...]
) -> tuple[float, float]:
    """The challenge's rules from their definitions, not through SimpleITK.

    Surface: foreground voxels with a face neighbour in the background (masks here keep
    clear of the image border). Distance: exact Euclidean distance in mm to the nearest
    surface voxel of the other mask. ASSD: the two directed means, averaged.
    """
    if not pred.any() or not ref.any():
        return 0.0, math.nan
    dsc = 2.0 * np.logical_and(pred, ref).sum() / (pred.sum() + ref.sum())
    face = ndimage.generate_binary_structure(3, 1)
    surface_p = pred & ~ndimage.binary_erosion(pred, face)
    surface_r = ref & ~ndimage.binary_erosion(ref, face)
    to_r = ndimage.distance_transform_edt(~surface_r, sampling=spacing_zyx)
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=spacing_zyx)
    return float(dsc), float(to_r[surface_p].mean() / 2 + to_p[surface_r].mean() / 2)


def random_nodes(rng: np.random.Generator, shape: tuple[int, int, int], count: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for _ in range(count):
        c = rng.uniform(5, np.array(shape) - 5)
        r = rng.uniform(1.5, 4.0, 3)
        mask |= ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1
    return mask


def image(mask: np.ndarray, spacing_xyz: tuple[float, float, float] = SPACING_XYZ) -> sitk.Image:
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(spacing_xyz)
    img.SetOrigin((-100.0, 50.0, -300.0))
    return img


def test_equals_independent_implementation_on_random_pairs() -> None:
    rng = np.random.default_rng(2023)
    shape = (24, 40, 40)
    for _ in range(24):
        ref = random_nodes(rng, shape, int(rng.integers(1, 5)))
        if rng.random() < 0.5:  # a prediction that overlaps: the reference, shifted and eroded/dilated
            pred = np.roll(ref, tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))
            pred = ndimage.binary_dilation(pred) if rng.random() < 0.5 else ndimage.binary_erosion(pred)
            pred |= random_nodes(rng, shape, int(rng.integers(0, 2)))
        else:
            pred = random_nodes(rng, shape, int(rng.integers(1, 5)))
        pred[:4] = pred[-4:] = False
        pred[:, :4] = pred[:, -4:] = pred[:, :, :4] = pred[:, :, -4:] = False
        got = score_case(image(pred), image(ref))
        want = independent_scores(pred, ref, SPACING_XYZ[::-1])
        assert got.dsc == pytest.approx(want[0], abs=1e-12)
        if math.isnan(want[1]):
            assert math.isnan(got.assd_mm)
        else:
            assert got.assd_mm == pytest.approx(want[1], rel=1e-5, abs=1e-5)


def test_identical_prediction() -> None:
    ref = random_nodes(np.random.default_rng(1), (20, 30, 30), 3)
    got = score_case(image(ref), image(ref))
    assert got.dsc == pytest.approx(1.0)
    assert got.assd_mm == pytest.approx(0.0, abs=1e-5)


def test_empty_prediction_gives_zero_and_nan() -> None:
    ref = random_nodes(np.random.default_rng(2), (20, 30, 30), 2)
    got = score_case(image(np.zeros_like(ref)), image(ref))
    assert got.dsc == 0.0 and math.isnan(got.assd_mm)
    assert got.as_json() == {"dsc": 0.0, "assd_mm": None}


def test_labels_other_than_one_count_as_foreground() -> None:
    ref = random_nodes(np.random.default_rng(3), (20, 30, 30), 2)
    labelled = sitk.GetImageFromArray(ref.astype(np.uint16) * 7)
    labelled.CopyInformation(image(ref))
    assert score_case(labelled, image(ref)).dsc == pytest.approx(1.0)


def test_different_grids_are_refused() -> None:
    ref = random_nodes(np.random.default_rng(4), (20, 30, 30), 2)
    with pytest.raises(ValueError, match="not on the same grid: spacing"):
        score_case(image(ref, (0.7, 0.8, 3.0)), image(ref))
    with pytest.raises(ValueError, match="size"):
        score_case(image(ref[:-1]), image(ref))

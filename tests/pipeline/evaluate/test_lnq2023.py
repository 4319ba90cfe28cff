"""LNQ2023 scoring against an independent implementation written here with numpy and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from pipeline.errors import ScoreError
from pipeline.evaluate import lnq2023
from pipeline.evaluate.lnq2023 import flat_nonzero, score_case

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
    """Exactly 0, not the 2e-7 to 9e-7 mm that float32 distance maps gave (issue 8)."""
    for seed, spacing in ((1, SPACING_XYZ), (5, (0.78, 0.78, 1.25)), (6, (0.6465, 0.6465, 8.0))):
        ref = random_nodes(np.random.default_rng(seed), (20, 30, 30), 3)
        got = score_case(image(ref, spacing), image(ref, spacing))
        assert got.dsc == 1.0
        assert got.assd_mm == 0.0


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
    with pytest.raises(ScoreError, match="not on the same grid: spacing"):
        score_case(image(ref, (0.7, 0.8, 3.0)), image(ref))
    with pytest.raises(ScoreError, match="size"):
        score_case(image(ref[:-1]), image(ref))


def challenge_scores(
    pred: np.ndarray, ref: np.ndarray, spacing_xyz: tuple[float, ...]
) -> tuple[float, float]:
    """The LNQ2023 evaluation code as the challenge ran it: SimpleITK overlap filter, LabelContour
    surfaces, float32 SignedMaurerDistanceMap over the whole image."""
    p, r = image(pred, spacing_xyz), image(ref, spacing_xyz)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(r, p)
    p_surface, r_surface = sitk.LabelContour(p), sitk.LabelContour(r)

    def distance_map(surface: sitk.Image) -> np.ndarray:
        mm = sitk.SignedMaurerDistanceMap(surface, squaredDistance=False, useImageSpacing=True)
        return np.abs(sitk.GetArrayFromImage(mm).astype(np.float64))

    p_on = sitk.GetArrayViewFromImage(p_surface) > 0
    r_on = sitk.GetArrayViewFromImage(r_surface) > 0
    to_r, to_p = distance_map(r_surface)[p_on], distance_map(p_surface)[r_on]
    return float(overlap.GetDiceCoefficient()), float(to_r.mean() / 2 + to_p.mean() / 2)


def straightforward_assd(pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, ...]) -> float:
    """ASSD from whole-image float64 distance maps, with LabelContour's border rule (beyond the
    image is not background): what the fast k-d tree path must equal within 1e-9."""
    face = ndimage.generate_binary_structure(3, 1)
    surface_p = pred & ~ndimage.binary_erosion(pred, face, border_value=1)
    surface_r = ref & ~ndimage.binary_erosion(ref, face, border_value=1)
    to_r = ndimage.distance_transform_edt(~surface_r, sampling=spacing_zyx)
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=spacing_zyx)
    return float(to_r[surface_p].mean() / 2 + to_p[surface_r].mean() / 2)


def scattered_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Reference nodes, and a prediction of shifted nodes plus single voxels and small blobs
    scattered over the whole image, borders included."""
    ref = random_nodes(rng, shape, int(rng.integers(1, 4)))
    pred = np.roll(ref, tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))
    pred = ndimage.binary_dilation(pred) if rng.random() < 0.5 else ndimage.binary_erosion(pred)
    for _ in range(int(rng.integers(0, 40))):
        z, y, x = (int(rng.integers(0, n)) for n in shape)
        size = rng.integers(1, 4, 3)
        pred[z : z + size[0], y : y + size[1], x : x + size[2]] = True
    if rng.random() < 0.3:  # a node cut by the image border
        ref[:3, :6, :6] = True
    return pred, ref


def test_fast_path_equals_straightforward_and_challenge_code() -> None:
    """Random cases with nodes at the border and scattered noise: within 1e-9 of whole-image float64
    distance maps, and within float32 rounding of the challenge's SimpleITK code."""
    rng = np.random.default_rng(11)
    shape = (18, 34, 30)
    for _ in range(30):
        pred, ref = scattered_case(rng, shape)
        spacing_xyz = tuple(float(v) for v in rng.uniform(0.5, 3.0, 3))
        got = score_case(image(pred, spacing_xyz), image(ref, spacing_xyz))
        assert got.assd_mm == pytest.approx(
            straightforward_assd(pred, ref, spacing_xyz[::-1]), rel=1e-9, abs=1e-12
        )
        dsc, assd = challenge_scores(pred, ref, spacing_xyz)
        assert got.dsc == pytest.approx(dsc, rel=1e-12)
        assert got.assd_mm == pytest.approx(assd, rel=2e-6, abs=2e-6)


def test_a_mask_without_surface_has_no_assd() -> None:
    """A mask filling the whole image has no LabelContour surface: no distance to average."""
    full = np.ones((6, 7, 8), bool)
    part = np.zeros_like(full)
    part[2:4, 2:5, 2:6] = True
    got = score_case(image(full), image(part))
    assert got.dsc == pytest.approx(2 * part.sum() / (full.sum() + part.sum()))
    assert math.isnan(got.assd_mm)


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.uint16, np.int16, np.int32, np.float32])
@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 4099])
def test_flat_nonzero_equals_numpy(dtype: type, size: int) -> None:
    rng = np.random.default_rng(size)
    values = (rng.random(size) < 0.1) * rng.integers(1, 5, size)
    if dtype is np.float32:
        values = values * -0.5  # -0.0 is zero
    array = values.astype(dtype)
    assert np.array_equal(flat_nonzero(array), np.flatnonzero(array))
    cube = np.zeros((3, 5, 7), dtype)
    cube[0, 0, 0] = cube[2, 4, 6] = cube[1, 2, 3] = 1
    assert np.array_equal(flat_nonzero(cube), np.flatnonzero(cube))
    assert np.array_equal(flat_nonzero(cube[:, ::2]), np.flatnonzero(cube[:, ::2]))


def test_probability_maps_are_refused_integer_floats_accepted() -> None:
    ref = random_nodes(np.random.default_rng(7), (20, 30, 30), 2)
    probabilities = sitk.GetImageFromArray(np.where(ref, 0.9, 0.02).astype(np.float32))
    probabilities.CopyInformation(image(ref))
    with pytest.raises(ScoreError, match="non-integer values .*probability map"):
        score_case(probabilities, image(ref))
    labels_as_float = sitk.GetImageFromArray(ref.astype(np.float32) * 2)
    labels_as_float.CopyInformation(image(ref))
    assert score_case(labels_as_float, image(ref)).dsc == 1.0


def test_two_dimensional_images_are_refused_with_the_expected_dimension() -> None:
    flat = sitk.GetImageFromArray(np.ones((30, 30), np.uint8))
    with pytest.raises(ScoreError, match=r"2-D image .*expected a 3-D label image"):
        score_case(flat, flat)


@pytest.mark.parametrize(
    ("sparse_max", "tree_max", "rel"), [(0, 10**9, 1e-9), (10**9, 0, 2e-6), (0, 0, 2e-6)]
)
def test_large_masks_and_surfaces_take_the_image_paths(
    monkeypatch: pytest.MonkeyPatch, sparse_max: int, tree_max: int, rel: float
) -> None:
    """Large masks: surfaces from LabelContour itself; past the k-d tree's limit, SimpleITK
    distance maps over the surfaces' slices (float32 rounding only, still exactly 0 for
    identical masks)."""
    monkeypatch.setattr(lnq2023, "SPARSE_MAX_VOXELS", sparse_max)
    monkeypatch.setattr(lnq2023, "KD_TREE_MAX_SURFACE_VOXELS", tree_max)
    rng = np.random.default_rng(12)
    shape = (18, 34, 30)
    for _ in range(10):
        pred, ref = scattered_case(rng, shape)
        spacing_xyz = tuple(float(v) for v in rng.uniform(0.5, 3.0, 3))
        got = score_case(image(pred, spacing_xyz), image(ref, spacing_xyz))
        want = independent_dsc_and(pred, ref, spacing_xyz)
        assert got.dsc == pytest.approx(want[0], rel=1e-12)
        assert got.assd_mm == pytest.approx(want[1], rel=rel, abs=rel)
        assert score_case(image(ref, spacing_xyz), image(ref, spacing_xyz)).assd_mm == 0.0


def independent_dsc_and(
    pred: np.ndarray, ref: np.ndarray, spacing_xyz: tuple[float, ...]
) -> tuple[float, float]:
    dsc = 2.0 * np.logical_and(pred, ref).sum() / (pred.sum() + ref.sum())
    return float(dsc), straightforward_assd(pred, ref, spacing_xyz[::-1])


def test_surface_voxels_in_chunks_equal_label_contour() -> None:
    rng = np.random.default_rng(13)
    pred, _ = scattered_case(rng, (18, 34, 30))
    contour = sitk.GetArrayFromImage(sitk.LabelContour(image(pred)))
    at = np.flatnonzero(pred)
    for chunk in (1, 7, 1 << 20):
        assert np.array_equal(lnq2023.surface_voxels(pred, at, chunk=chunk), np.flatnonzero(contour))

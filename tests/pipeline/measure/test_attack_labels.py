"""Attacks on label_nodes: foreground on the faces and corners, tiny and flat volumes, mask
dtypes and layouts, values other than 0/1, and more components than uint16 holds."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.geometry import Geometry
from pipeline.measure import components
from pipeline.measure.components import label_nodes

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _grid(shape) -> Geometry:  # type: ignore[no-untyped-def]
    return Geometry(
        size_zyx=tuple(shape), origin_mm=(0.0, 0.0, 0.0), spacing_mm=(1.0, 1.0, 1.0), direction=IDENTITY
    )


def _reference(mask: np.ndarray) -> np.ndarray:
    """SimpleITK's fully connected ConnectedComponent on (mask != 0), stable-sorted by decreasing size."""
    fg = np.ascontiguousarray(np.asarray(mask) != 0).astype(np.uint8)
    itk = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(fg), True)).astype(np.int64)
    n = int(itk.max())
    if n == 0:
        return itk
    counts = np.bincount(itk.ravel(), minlength=n + 1)[1:]
    remap = np.zeros(n + 1, dtype=np.int64)
    remap[np.argsort(-counts, kind="stable") + 1] = np.arange(1, n + 1)
    return remap[itk]


def _check(mask: np.ndarray) -> np.ndarray:
    labels = label_nodes(mask, _grid(mask.shape))
    assert labels.shape == mask.shape
    np.testing.assert_array_equal(labels.astype(np.int64), _reference(mask))
    return labels


def test_every_corner_and_face_voxel() -> None:
    mask = np.zeros((6, 7, 8), np.uint8)
    for z in (0, -1):
        for y in (0, -1):
            for x in (0, -1):
                mask[z, y, x] = 1
    mask[2:4, 0, 3:5] = 1  # touches the y=0 face
    mask[0, 3, 2:6] = 1  # touches the z=0 face, 4 voxels
    mask[-1, 2:6, -1] = 1  # touches the x and z last faces, and joins the last corner
    labels = _check(mask)
    assert labels.max() == 10 and labels.dtype == np.uint16


def test_full_volume_is_one_node() -> None:
    labels = _check(np.ones((3, 4, 5), bool))
    assert (labels == 1).all()


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 5, 7), (5, 1, 1), (1, 1, 9), (2, 1, 3)])
def test_tiny_and_flat_volumes(shape) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > 0.5
    mask.flat[0] = True
    labels = _check(mask)
    assert labels.max() >= 1


def test_single_voxel_in_the_last_corner() -> None:
    mask = np.zeros((4, 5, 6), bool)
    mask[3, 4, 5] = True
    labels = _check(mask)
    assert labels[3, 4, 5] == 1 and labels.sum() == 1


@pytest.mark.parametrize(
    "dtype", [bool, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float32, np.float64]
)
def test_mask_dtypes_and_values_other_than_one(dtype) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 4, size=(9, 11, 13)) * (rng.random((9, 11, 13)) > 0.8)
    mask = raw.astype(dtype)
    if np.issubdtype(np.dtype(dtype), np.signedinteger) or np.issubdtype(np.dtype(dtype), np.floating):
        mask[mask == 3] = -3  # negative values are foreground too
    _check(mask)


def test_float_mask_with_fractions_and_nan_counts_every_non_zero_voxel() -> None:
    mask = np.zeros((5, 6, 7), np.float32)
    mask[1, 1, 1] = 0.25
    mask[3, 4, 5] = np.nan
    mask[3, 4, 6] = 1e-30
    labels = label_nodes(mask, _grid(mask.shape))
    assert labels[1, 1, 1] == 2 and labels[3, 4, 5] == 1 and labels[3, 4, 6] == 1
    assert int((labels > 0).sum()) == 3


def test_values_that_wrap_in_uint8_are_foreground() -> None:
    mask = np.zeros((4, 4, 4), np.int32)
    mask[0, 0, 0] = 256
    mask[3, 3, 3] = 512
    labels = label_nodes(mask, _grid(mask.shape))
    assert labels[0, 0, 0] == 1 and labels[3, 3, 3] == 2


@pytest.mark.parametrize("layout", ["transposed", "reversed", "strided", "fortran"])
def test_non_contiguous_masks(layout: str) -> None:
    rng = np.random.default_rng(5)
    base = rng.random((20, 22, 24)) > 0.88
    if layout == "transposed":
        mask = base.transpose(2, 0, 1)
    elif layout == "reversed":
        mask = base[::-1, :, ::-1]
    elif layout == "strided":
        mask = base[::2, 1::2, ::3]
    else:
        mask = np.asfortranarray(base)
    assert not mask.flags.c_contiguous
    _check(mask)


def test_read_only_memmap_mask(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(6)
    data = (rng.random((12, 30, 31)) > 0.9).astype(np.uint8)
    data[:, :5] = 0
    path = tmp_path / "mask.u8"
    data.tofile(path)
    mask = np.memmap(path, dtype=np.uint8, mode="r", shape=data.shape)
    _check(mask)
    np.testing.assert_array_equal(np.asarray(mask), data)  # the mask is left alone


def test_mask_is_not_modified() -> None:
    rng = np.random.default_rng(7)
    mask = (rng.random((10, 12, 14)) > 0.8).astype(np.uint8) * 7
    before = mask.copy()
    label_nodes(mask, _grid(mask.shape))
    np.testing.assert_array_equal(mask, before)


def _isolated_specks(per_axis: int) -> np.ndarray:
    mask = np.zeros((2 * per_axis, 2 * per_axis, 2 * per_axis), np.uint8)
    mask[::2, ::2, ::2] = 1
    return mask


def test_exactly_65535_components_stay_uint16() -> None:
    mask = np.zeros((1, 1, 2 * 65536 - 1), np.uint8)
    mask[0, 0, ::2] = 1  # 65536 specks
    mask[0, 0, -2] = 1  # the last two specks join: 65535 nodes, the last one of 3 voxels
    labels = label_nodes(mask, _grid(mask.shape))
    assert labels.dtype == np.uint16
    assert int(labels.max()) == 65535
    assert labels[0, 0, -1] == 1 and labels[0, 0, 0] == 2 and labels[0, 0, -5] == 65535
    np.testing.assert_array_equal(labels.astype(np.int64), _reference(mask))


def test_more_than_65535_components_fall_back_to_int32_and_number_as_simpleitk() -> None:
    mask = _isolated_specks(42)  # 74088 isolated voxels
    # a few bigger nodes late in raster order, so renumbering moves them to the front
    mask[-2:, -6:, -6:] = 1
    mask[-6:-4, -2:, :4] = 1
    labels = _check(mask)
    assert labels.dtype == np.int32
    assert int(labels.max()) > 65535
    assert labels[-1, -1, -1] == 1


def test_more_than_65535_components_in_an_off_centre_box() -> None:
    specks = _isolated_specks(41)[:-1, :-1, :-1]  # 68921 specks in an 81^3 box
    mask = np.zeros((85, 90, 95), np.uint8)
    mask[2:83, 5:86, 11:92] = specks
    mask[80, 80:82, 80:83] = 1
    assert components._foreground_box(mask) == (slice(2, 83), slice(5, 86), slice(11, 92))
    labels = _check(mask)
    assert labels.dtype == np.int32 and int(labels.max()) > 65535

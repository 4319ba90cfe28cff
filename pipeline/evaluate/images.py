"""Read masks to score: DICOM SEG (highdicom) or any label image SimpleITK reads.

A SEG's own volume spans only its frames (empty frames are omitted), so two
SEGs of one CT rarely share a grid: they are placed on the union of their
extents, padded by one voxel so that surfaces at the ends stay surfaces. With
the CT at hand, SEGs are placed on the CT grid itself, as the pipeline does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk

from pipeline.dicom.reference_seg import SEGMENTATION_STORAGE, read_reference_seg
from pipeline.dicom.volume import CtVolume, mask_to_sitk
from pipeline.evaluate.lnq2023 import GEOMETRY_TOLERANCE, binary_uint8, check_same_grid

OFFSET_TOLERANCE_VOXELS = 1e-3


@dataclass(frozen=True)
class LabelImage:
    """A binary UInt8 image; ``cropped`` when its grid spans only a SEG's frames."""

    image: sitk.Image
    cropped: bool


def is_dicom_seg(path: str) -> bool:
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return False
    return str(header.get("SOPClassUID", "")) == SEGMENTATION_STORAGE


def read_label_image(path: str) -> LabelImage:
    """A binary image of every segment (SEG) or every non-zero label (other formats)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    if is_dicom_seg(path):
        seg = hd.seg.segread(path)
        volume = seg.get_volume(combine_segments=False, dtype=np.uint8)
        union = volume.with_array(np.any(volume.array > 0, axis=-1).astype(np.uint8))
        return LabelImage(image=binary_uint8(union.to_simpleitk()), cropped=True)
    return LabelImage(image=binary_uint8(sitk.ReadImage(path)), cropped=False)


def read_on_ct(path: str, ct: CtVolume) -> sitk.Image:
    """A mask on the CT's own grid: SEGs by their referenced instances, label images as they are."""
    if is_dicom_seg(path):
        return mask_to_sitk(read_reference_seg(path, ct), ct.geometry)
    image = binary_uint8(sitk.ReadImage(path))
    check_same_grid(image, ct.geometry.apply_to(sitk.Image(image.GetSize(), sitk.sitkUInt8)))
    return image


def common_grid(prediction: LabelImage, reference: LabelImage) -> tuple[sitk.Image, sitk.Image]:
    """Both images on one grid: their own if they share it, else the padded union of SEG extents."""
    pred, ref = prediction.image, reference.image
    if not (prediction.cropped or reference.cropped):
        check_same_grid(pred, ref)
        return pred, ref
    pred = _borrow_slice_spacing(pred, ref)
    ref = _borrow_slice_spacing(ref, pred)
    if not np.allclose(pred.GetSpacing(), ref.GetSpacing(), atol=GEOMETRY_TOLERANCE) or not np.allclose(
        pred.GetDirection(), ref.GetDirection(), atol=GEOMETRY_TOLERANCE
    ):
        raise ValueError(
            "prediction and reference differ in spacing or orientation "
            f"({pred.GetSpacing()} vs {ref.GetSpacing()}); score them on the CT grid (--ct)"
        )
    grid = _union_grid(pred, ref)
    return _place(pred, grid), _place(ref, grid)


def _borrow_slice_spacing(image: sitk.Image, other: sitk.Image) -> sitk.Image:
    """A one-frame SEG has no slice spacing of its own: take the other image's."""
    if image.GetSize()[2] != 1:
        return image
    copy = sitk.Image(image)
    spacing = list(image.GetSpacing())
    spacing[2] = other.GetSpacing()[2]
    copy.SetSpacing(spacing)
    return copy


def _index_of(point: tuple[float, ...], image: sitk.Image) -> np.ndarray:
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    offset = np.asarray(point) - np.asarray(image.GetOrigin())
    return (direction.T @ offset) / np.asarray(image.GetSpacing())


def _union_grid(a: sitk.Image, b: sitk.Image) -> sitk.Image:
    start = _index_of(a.GetOrigin(), b)
    if np.max(np.abs(start - np.round(start))) > OFFSET_TOLERANCE_VOXELS:
        raise ValueError(
            f"prediction and reference grids are offset by {start.round(3).tolist()} voxels, "
            "not a whole number; score them on the CT grid (--ct)"
        )
    start = np.round(start).astype(int)
    low = np.minimum(0, start) - 1
    high = np.maximum(np.asarray(b.GetSize()) - 1, start + np.asarray(a.GetSize()) - 1) + 1
    direction = np.asarray(b.GetDirection()).reshape(3, 3)
    origin = np.asarray(b.GetOrigin()) + direction @ (low * np.asarray(b.GetSpacing()))
    grid = sitk.Image([int(v) for v in high - low + 1], sitk.sitkUInt8)
    grid.SetSpacing(b.GetSpacing())
    grid.SetDirection(b.GetDirection())
    grid.SetOrigin(tuple(float(v) for v in origin))
    return grid


def _place(image: sitk.Image, grid: sitk.Image) -> sitk.Image:
    return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)

"""Read masks to score: DICOM SEG (highdicom) or any label image SimpleITK reads.

Orientation: whatever the source, the images handed to scoring and measurement
are *axial*, the convention of ``pipeline/geometry.py``: image x along the
CT rows, y along its columns, z the slice normal ``cross(x, y)``, so that numpy
``[z, y, x]`` arrays hold axial slices and node short axes are measured on them.
:func:`to_axial` gets there by permuting axes (and reversing the slice order),
never by resampling. A SEG read without its CT needs it: highdicom's volume
puts the slice axis first (SimpleITK size (30, 512, 512), spacing
(8.0, 0.65, 0.65)), which would measure nodes on sagittal planes.

A SEG's own volume spans only its frames (empty frames are omitted), so two
SEGs of one CT rarely share a grid: they are placed on the union of their
extents. With the CT at hand, SEGs are placed on the CT grid itself, as the
pipeline does. The two give the same scores because the union has the CT's
borders wherever they can be known (LNQ2023's rule: beyond the image border is
not background, so a mask touching the border has no surface there):

- in plane, a SEG frame spans the CT's rows and columns: the union is not padded;
- along the slices, a SEG that lists every instance of its CT series in slice
  order (this pipeline's SEGs do; so does any SEG listing instances its frames do
  not come from, when the order fits its frame positions) says where the CT's
  first and last slices are: the union ends there, or is padded by one background
  slice where the CT goes on;
- where no SEG says so (dcmqi, and so IDC's references, list only the instances
  of their own frames), the CT is taken to go on past the union's first and last
  slices, which get one background slice each, so that masks' ends are surfaces.
  A mask on the CT's first or last slice then needs ``--ct`` to score as the
  pipeline does;
- a label image (not a SEG) holds the whole grid: the union is its grid.

Labels: every non-zero label is foreground. Images whose values are not whole
numbers (probability maps, fractional SEGs) are refused unless a threshold is
given: then voxels with a value >= threshold are foreground.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk

from pipeline.dicom.reference_seg import SEGMENTATION_STORAGE, read_reference_seg
from pipeline.dicom.seg_writer import MANUFACTURER as SEG_MANUFACTURER
from pipeline.errors import ScoreError
from pipeline.evaluate.lnq2023 import binary_uint8, check_label_image
from pipeline.geometry import GRID_TOLERANCE, CtVolume, Geometry, mask_to_sitk


@dataclass(frozen=True)
class LabelImage:
    """A binary UInt8 axial image; ``cropped`` when its grid spans only a SEG's frames, then
    with the centres of its CT's first and last slices (patient mm) when the SEG tells them."""

    image: sitk.Image
    cropped: bool
    ct_ends_mm: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None


def is_dicom_seg(path: str) -> bool:
    return _seg_type(path) is not None


def _seg_type(path: str) -> str | None:
    """A DICOM SEG's SegmentationType (BINARY, FRACTIONAL, LABELMAP); None for other files."""
    try:
        header = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SegmentationType"]
        )
    except Exception:
        return None
    if str(header.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        return None
    return str(header.get("SegmentationType", ""))


def require_file(path: str) -> None:
    """``FileNotFoundError`` (one clear line) unless ``path`` is an existing file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if not os.path.isfile(path):
        raise ScoreError(f"{path} is a folder, not a mask file (DICOM SEG or label image)")


def read_label_image(path: str, *, threshold: float | None = None) -> LabelImage:
    """A binary axial image of every segment (SEG) or every non-zero label (other formats)."""
    require_file(path)
    if is_dicom_seg(path):
        return LabelImage(image=to_axial(_read_seg(path, threshold)), cropped=True, ct_ends_mm=ct_ends(path))
    image = to_axial(binary_mask(_read_image(path), path, threshold=threshold))
    return LabelImage(image=image, cropped=False)


def binary_mask(image: sitk.Image, name: str, *, threshold: float | None = None) -> sitk.Image:
    """UInt8 foreground 1: value >= ``threshold`` when one is given, else every non-zero
    integer label (a non-integer image is refused, see :func:`check_label_image`)."""
    if threshold is None:
        check_label_image(image, name)
        return binary_uint8(image)
    check_label_image(image, name, integers=False)
    return sitk.Cast(sitk.GreaterEqual(sitk.Cast(image, sitk.sitkFloat64), float(threshold)), sitk.sitkUInt8)


SLICE_FIT_TOLERANCE_MM = 0.05
"""How far a frame may lie from the slice its listed CT instance implies (as the CT decoder's
slice spacing check)."""


def ct_ends(path: str) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    """Centres of the first and last slice of the CT a SEG lists, or None when the SEG does not
    tell them: it must list its whole series (instances its frames do not come from, or written
    by this pipeline, which lists them all), in an order its frame positions fit as slice indices
    (two or more slices with frames, equally spaced within :data:`SLICE_FIT_TOLERANCE_MM`)."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        series = list(header.get("ReferencedSeriesSequence", []))
        if len(series) != 1:
            return None
        listed = [str(i.ReferencedSOPInstanceUID) for i in series[0].get("ReferencedInstanceSequence", [])]
        index = {uid: k for k, uid in enumerate(listed)}
        if len(index) != len(listed) or len(listed) < 2:
            return None
        shared = header.SharedFunctionalGroupsSequence[0]
        at: dict[int, np.ndarray] = {}
        orientation = None
        for frame in header.PerFrameFunctionalGroupsSequence:
            groups = frame if "PlaneOrientationSequence" in frame else shared
            orientation = np.asarray(groups.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
            position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
            sources = {
                str(src.ReferencedSOPInstanceUID)
                for derivation in frame.get("DerivationImageSequence", [])
                for src in derivation.get("SourceImageSequence", [])
            } & index.keys()
            if len(sources) != 1:
                return None
            k = index[sources.pop()]
            if k in at and np.abs(at[k] - position).max() > SLICE_FIT_TOLERANCE_MM:
                return None
            at[k] = position
    except Exception:  # a header highdicom reads (or refuses) anyway; nothing is inferred from it
        return None
    lists_series = len(at) < len(listed) or str(header.get("Manufacturer", "")) == SEG_MANUFACTURER
    if not lists_series or len(at) < 2 or orientation is None:
        return None
    ks = np.array(sorted(at))
    points = np.array([at[k] for k in ks])
    step = (points[-1] - points[0]) / (ks[-1] - ks[0])  # one slice, in mm, as the listing orders them
    normal = np.cross(orientation[:3], orientation[3:])
    fitted = points[0] + np.outer(ks - ks[0], step)
    if np.abs(points - fitted).max() > SLICE_FIT_TOLERANCE_MM or abs(float(step @ normal)) < 1e-3:
        return None
    first = points[0] - ks[0] * step
    last = points[0] + (len(listed) - 1 - ks[0]) * step
    return (_point(first), _point(last))


def _point(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def _read_image(path: str) -> sitk.Image:
    try:
        return sitk.ReadImage(path)
    except RuntimeError as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if "Description" in line), "")
        raise ScoreError(
            f"{path} is neither a DICOM SEG nor an image SimpleITK can read (.nrrd, .mha, .nii.gz)"
            + (f": {reason}" if reason else "")
        ) from exc


def _read_seg(path: str, threshold: float | None) -> sitk.Image:
    try:
        seg = hd.seg.segread(path)
        fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
        volume = seg.get_volume(combine_segments=False, dtype=np.float32 if fractional else np.uint8)
    except Exception as exc:
        raise ScoreError(f"{path}: the SEG cannot be read: {type(exc).__name__}: {exc}") from exc
    values = volume.array  # spatial axes, then one channel per segment
    if threshold is not None:
        union = np.any(values >= threshold, axis=-1)
    else:
        if fractional and np.any(values != np.round(values)):
            raise ScoreError(
                f"{path} is a FRACTIONAL SEG with values between 0 and 1 (probabilities); "
                "threshold it (for example at 0.5) before scoring"
            )
        union = np.any(values != 0, axis=-1)
    return volume.with_array(union.astype(np.uint8)).to_simpleitk()


def read_on_ct(path: str, ct: CtVolume, *, threshold: float | None = None) -> sitk.Image:
    """A mask on the CT's own grid: SEGs by their referenced instances, label images
    when they are on that grid (up to the order and sense of their axes)."""
    require_file(path)
    seg_type = _seg_type(path)
    if seg_type == "FRACTIONAL":
        return _placed_seg(path, ct, threshold)
    if seg_type is not None:
        return mask_to_sitk(read_reference_seg(path, ct), ct.geometry)
    image = orient_like(binary_mask(_read_image(path), path, threshold=threshold), ct.geometry)
    problems = ct.geometry.grid_differences(Geometry.from_sitk(image))
    if problems:
        raise ScoreError(f"{path} is not on the CT grid: " + "; ".join(problems))
    return image


def _placed_seg(path: str, ct: CtVolume, threshold: float | None) -> sitk.Image:
    """A fractional SEG thresholded (or refused), then placed on the CT grid by position."""
    image = _read_seg(path, threshold)
    return sitk.Resample(
        image, ct.geometry.empty_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )


def common_grid(prediction: LabelImage, reference: LabelImage) -> tuple[sitk.Image, sitk.Image]:
    """Both images on one grid: their own if they share it, else the union of SEG extents with
    the CT's borders where they are known (see the module docstring)."""
    pred, ref = prediction.image, reference.image
    if not (prediction.cropped or reference.cropped):
        pred = orient_like(pred, Geometry.from_sitk(ref))
        problems = Geometry.from_sitk(ref).grid_differences(Geometry.from_sitk(pred))
        if problems:
            raise ScoreError("prediction and reference are not on the same grid: " + "; ".join(problems))
        return pred, ref
    pred = _borrow_slice_spacing(pred, ref)
    ref = _borrow_slice_spacing(ref, pred)
    pred_grid, ref_grid = Geometry.from_sitk(pred), Geometry.from_sitk(ref)
    # Spacing and orientation must agree; size and origin may differ (the union covers both).
    problems = ref_grid.grid_differences(
        dataclasses.replace(pred_grid, size_zyx=ref_grid.size_zyx, origin_mm=ref_grid.origin_mm)
    )
    if problems:
        raise ScoreError(
            "prediction and reference differ in " + "; ".join(problems) + "; score them on the CT grid"
        )
    union = _union_grid(pred_grid, ref_grid, pad=(0, 0))
    grid = _union_grid(pred_grid, ref_grid, pad=_end_padding(union, prediction, reference))
    return _place(pred, grid), _place(ref, grid)


def _end_padding(union: Geometry, prediction: LabelImage, reference: LabelImage) -> tuple[int, int]:
    """Background slices to add before the union's first and after its last slice: none where
    the union ends with the CT, one where the CT goes on or nobody says (see the module
    docstring). A label image's grid is the CT's own."""
    if not (prediction.cropped and reference.cropped):
        return (0, 0)
    known = [i.ct_ends_mm for i in (prediction, reference) if i.ct_ends_mm is not None]
    if not known:
        return (1, 1)
    ends = np.asarray(known[0], dtype=float)
    along = union.direction_matrix[:, 2]
    slices = (ends - np.asarray(union.origin_mm)) @ along / union.spacing_mm[2]  # CT ends in union slices
    low, high = float(slices.min()), float(slices.max())
    last = union.size_zyx[0] - 1
    tolerance = SLICE_FIT_TOLERANCE_MM / union.spacing_mm[2]
    if low > tolerance or high < last - tolerance:  # frames outside the CT they list: trust nothing
        return (1, 1)
    return (int(low < -tolerance), int(high > last + tolerance))


def _borrow_slice_spacing(image: sitk.Image, other: sitk.Image) -> sitk.Image:
    """A one-frame SEG has no slice spacing of its own: take the other image's."""
    if image.GetSize()[2] != 1:
        return image
    copy = sitk.Image(image)
    spacing = list(image.GetSpacing())
    spacing[2] = other.GetSpacing()[2]
    copy.SetSpacing(spacing)
    return copy


def _union_grid(a: Geometry, b: Geometry, *, pad: tuple[int, int]) -> Geometry:
    """``b``'s grid grown to cover ``a`` (whose voxels must sit on it), plus ``pad`` slices
    before its first and after its last slice (never in plane)."""
    start = (b.direction_matrix.T @ (np.asarray(a.origin_mm) - b.origin_mm)) / np.asarray(b.spacing_mm)
    offset_mm = np.abs(start - np.round(start)) * np.asarray(b.spacing_mm)
    if np.max(offset_mm) > GRID_TOLERANCE:
        raise ScoreError(
            f"prediction and reference grids are offset by {start.round(3).tolist()} voxels, "
            "not a whole number; score them on the CT grid"
        )
    start_xyz = np.round(start).astype(int)
    size_a, size_b = np.asarray(a.size_zyx[::-1]), np.asarray(b.size_zyx[::-1])
    low = np.minimum(0, start_xyz) - np.array([0, 0, pad[0]])
    high = np.maximum(size_b - 1, start_xyz + size_a - 1) + np.array([0, 0, pad[1]])
    origin = np.asarray(b.origin_mm) + b.direction_matrix @ (low * np.asarray(b.spacing_mm))
    size_xyz = high - low + 1
    return Geometry(
        size_zyx=(int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0])),
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing_mm=b.spacing_mm,
        direction=b.direction,
    )


def _place(image: sitk.Image, grid: Geometry) -> sitk.Image:
    return sitk.Resample(
        image, grid.empty_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )


def to_axial(image: sitk.Image) -> sitk.Image:
    """``image`` with its axes permuted (and the slice order reversed when needed) so that
    z is the axis closest to the patient's head-feet axis, x the remaining axis closest to
    left-right, y the other, and slices run along ``cross(x, y)``. Voxels are not resampled;
    an image already in that orientation is returned as it is."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    z_axis = int(np.argmax(np.abs(direction[2])))
    rest = [a for a in range(3) if a != z_axis]
    x_axis = max(rest, key=lambda a: abs(direction[0, a]))  # first of equals on a tie
    y_axis = rest[1] if x_axis == rest[0] else rest[0]
    order = (x_axis, y_axis, z_axis)
    normal = np.cross(direction[:, x_axis], direction[:, y_axis])
    flips = (False, False, bool(normal @ direction[:, z_axis] < 0))
    return _reorient(image, order, flips)


def orient_like(image: sitk.Image, grid: Geometry) -> sitk.Image:
    """``image`` with axes permuted and reversed to follow ``grid``'s axes as closely as
    possible (an image of ``grid`` saved with another axis order or sense comes back on it)."""
    own = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    cosines = own.T @ grid.direction_matrix  # [own axis, grid axis]
    order = tuple(int(np.argmax(np.abs(cosines[:, k]))) for k in range(3))
    if sorted(order) != [0, 1, 2]:
        return image  # oblique beyond recognition: leave it to the grid check
    flips = tuple(bool(cosines[order[k], k] < 0) for k in range(3))
    return _reorient(image, order, flips)


def _reorient(image: sitk.Image, order: tuple[int, ...], flips: tuple[bool, ...]) -> sitk.Image:
    """New axis k is old axis ``order[k]``, reversed where ``flips[k]``; same voxels in space."""
    if tuple(order) == (0, 1, 2) and not any(flips):
        return image
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    size = np.asarray(image.GetSize())
    origin = np.asarray(image.GetOrigin(), dtype=float)
    new_direction = direction[:, list(order)].copy()
    new_spacing = spacing[list(order)]
    array = sitk.GetArrayFromImage(image)  # [z, y, x]: SimpleITK axis a is numpy axis 2 - a
    array = np.transpose(array, [2 - order[2], 2 - order[1], 2 - order[0]])
    for k, flip in enumerate(flips):
        if flip:
            origin = origin + new_direction[:, k] * new_spacing[k] * (size[order[k]] - 1)
            new_direction[:, k] *= -1
            array = np.flip(array, axis=2 - k)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(tuple(float(v) for v in new_spacing))
    out.SetOrigin(tuple(float(v) for v in origin))
    out.SetDirection(tuple(float(v) for v in new_direction.ravel()))
    return out

"""What a reference SEG claims, checked next to its reader (``reference_seg``): its header against the
bytes present (frames, bits, segments) before highdicom parses it, and every frame's plane against
the CT slice it is placed on (orientation, pixel spacing, position) before it is placed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from pipeline.dicom.ct_checks import ORIENTATION_TOLERANCE, PIXEL_SPACING_TOLERANCE_MM
from pipeline.dicom.safe_read import (
    Fail,
    get_value,
    integer,
    known_transfer_syntax,
    numbers,
    pixel_data_extent,
)
from pipeline.errors import PipelineError
from pipeline.geometry import CtVolume

SEG_BITS_ALLOCATED = {"BINARY": (1,), "FRACTIONAL": (8,), "LABELMAP": (8, 16)}
"""Bits Allocated by Segmentation Type (PS3.3 C.8.20.2; LABELMAP from Supplement 243)."""


@dataclass(frozen=True)
class SegHeader:
    """The checked frame claims of a SEG."""

    segmentation_type: str
    frames: int
    rows: int
    columns: int
    segments: int


def check_seg_header(
    path: str,
    ds: Dataset,
    file_size: int,
    fail: Fail,
    *,
    ct_slices: int,
    ct_rows: int,
    ct_columns: int,
) -> SegHeader:
    """Frames, matrix and bits of a SEG against its CT and the bytes in the file.

    A SEG frame is one segment on one CT slice, so a SEG of this CT has at most
    ``ct_slices x segments`` frames (LNQ's SEGs keep only frames with nodes); anything above
    that is a header claiming frames that cannot belong to this CT.
    """
    name = os.path.basename(path)
    seg_type = str(get_value(ds, "SegmentationType", name, fail) or "")
    if seg_type not in SEG_BITS_ALLOCATED:
        raise fail(f"{name}: SegmentationType {seg_type!r}, expected one of {sorted(SEG_BITS_ALLOCATED)}")
    bits = integer(ds, "BitsAllocated", name, fail)
    if bits not in SEG_BITS_ALLOCATED[seg_type]:
        expected = " or ".join(str(b) for b in SEG_BITS_ALLOCATED[seg_type])
        raise fail(f"{name}: BitsAllocated {bits} for a {seg_type} SEG, expected {expected}")
    samples = integer(ds, "SamplesPerPixel", name, fail, default=1)
    if samples != 1:
        raise fail(f"{name}: SamplesPerPixel {samples}, a SEG has 1")
    rows = integer(ds, "Rows", name, fail)
    columns = integer(ds, "Columns", name, fail)
    if (rows, columns) != (ct_rows, ct_columns):
        raise fail(f"{name}: frames are {rows}x{columns}, the CT slices {ct_rows}x{ct_columns}")
    segments = len(get_value(ds, "SegmentSequence", name, fail) or [])
    if segments < 1:
        raise fail(f"{name} has no segments (SegmentSequence is empty)")
    frames = integer(ds, "NumberOfFrames", name, fail)
    most = ct_slices * (1 if seg_type == "LABELMAP" else segments)
    if not 1 <= frames <= most:
        raise fail(
            f"{name}: NumberOfFrames {frames}, expected 1 to {most} "
            f"(one frame per CT slice{'' if seg_type == 'LABELMAP' else ' and segment'}: "
            f"{ct_slices} slices x {segments} segment(s))"
        )
    per_frame = get_value(ds, "PerFrameFunctionalGroupsSequence", name, fail) or []
    if len(per_frame) != frames:
        raise fail(
            f"{name}: NumberOfFrames {frames}, but PerFrameFunctionalGroupsSequence has "
            f"{len(per_frame)} item(s)"
        )
    extent = pixel_data_extent(path, ds, file_size, fail)
    if known_transfer_syntax(ds, name, fail).is_encapsulated:
        if len(extent.fragments) < frames:
            raise fail(f"{name}: {frames} frames in {len(extent.fragments)} compressed fragment(s)")
    else:
        needed = (frames * rows * columns * bits + 7) // 8
        if extent.declared_length is None or extent.present not in (needed, needed + needed % 2):
            raise fail(
                f"{name}: PixelData holds {extent.present} bytes, {frames} frames of "
                f"{rows} x {columns} x {bits} bit(s) need {needed}"
            )
    _check_segment_numbers(
        ds, per_frame, name, fail, segments=segments, per_frame_segment=seg_type != "LABELMAP"
    )
    return SegHeader(segmentation_type=seg_type, frames=frames, rows=rows, columns=columns, segments=segments)


def _check_segment_numbers(
    ds: Dataset, per_frame: Any, name: str, fail: Fail, *, segments: int, per_frame_segment: bool
) -> None:
    """Segments are numbered 1 to n (PS3.3 C.8.20.2), and every BINARY or FRACTIONAL frame
    references one of them: highdicom leaves out a frame of an undescribed segment, silently."""
    try:
        numbers_found = [integer(item, "SegmentNumber", name, fail) for item in ds.SegmentSequence]
        if sorted(numbers_found) != list(range(1, segments + 1)):
            shown = ", ".join(str(n) for n in numbers_found[:6])
            raise fail(f"{name}: SegmentNumber values {shown}; segments are numbered 1 to {segments}")
        if not per_frame_segment:
            return
        shared = ds.get("SharedFunctionalGroupsSequence") or [Dataset()]
        shared_identification = shared[0].get("SegmentIdentificationSequence")
        for index, item in enumerate(per_frame):
            identification = item.get("SegmentIdentificationSequence") or shared_identification
            if not identification:
                raise fail(f"{name}: frame {index + 1} names no segment (no SegmentIdentificationSequence)")
            number = integer(identification[0], "ReferencedSegmentNumber", name, fail)
            if not 1 <= number <= segments:
                raise fail(
                    f"{name}: frame {index + 1} belongs to segment {number}, "
                    f"the SEG describes segments 1 to {segments}"
                )
    except PipelineError:
        raise
    except Exception as exc:  # a garbled sequence item
        raise fail(f"{name}: segment numbers cannot be read: {type(exc).__name__}: {exc}") from exc


# ---- planes: a frame on its CT slice ---------------------------------------------------------------
# A reference SEG's plane geometry checked against its CT's, before a frame is placed.
#
# Frames are placed on the CT slice each one references, by pixel index (highdicom's
# ``ignore_spatial_locations=True``): a SEG whose planes are not the CT's would land somewhere
# else than where its annotator drew it. A SEG drawn on a left-right mirrored copy of the CT
# (its row direction reversed) would land on the mirror image, on fat instead of nodes, and
# the series would still be ``ok``. So every frame's plane must be the CT slice's plane: the
# same orientation (row and column directions), the same pixel spacing, and its position
# (``ImagePositionPatient``, the centre of its first pixel) on the slice it references, or,
# for a frame without a source reference, on one of the CT's slices. Per-frame values override
# the shared ones, as the enhanced multi-frame functional groups define. A frame whose plane
# cannot be read cannot be checked, and is refused too.

POSITION_TOLERANCE_MM = 0.05
"""A frame's first pixel lies within this of its slice's: far below a voxel, far above the
rounding of positions written as decimal strings."""


@dataclass(frozen=True)
class FramePlane:
    """One frame's plane: row and column direction cosines, pixel spacing (row, column) in mm and
    the position of its first pixel (LPS mm)."""

    orientation: tuple[float, ...]
    pixel_spacing_mm: tuple[float, float]
    position_mm: tuple[float, float, float]


def check_seg_planes(
    ds: Dataset, ct: CtVolume, sources: Sequence[set[str]], fail: Fail, *, name: str
) -> None:
    """Refuse (``fail``) a SEG any of whose frames does not lie on its CT slice's plane.

    ``sources`` are the CT instances each frame references (empty: none), in frame order. Run
    before highdicom parses the SEG, it leaves to the checks after that what they name better:
    a SEG on another frame of reference, and frames that reference instances of another series."""
    seg_frame_of_reference = str(ds.get("FrameOfReferenceUID", "") or "")
    if (
        seg_frame_of_reference
        and ct.frame_of_reference_uid
        and seg_frame_of_reference != ct.frame_of_reference_uid
    ):
        return  # another patient space altogether: refused as such (reference_seg)
    planes = frame_planes(ds, fail, name=name)
    geometry = ct.geometry
    direction = geometry.direction_matrix
    ct_orientation = np.concatenate([direction[:, 0], direction[:, 1]])
    ct_spacing = np.array([geometry.spacing_mm[1], geometry.spacing_mm[0]])  # (row, column) as DICOM
    normal = direction[:, 2]
    positions = _ct_slice_positions(ct)
    slice_of = {uid: k for k, uid in enumerate(ct.sop_instance_uids)}
    along = positions @ normal
    for index, plane in enumerate(planes):
        frame = index + 1
        orientation = np.asarray(plane.orientation)
        if np.max(np.abs(orientation - ct_orientation)) > ORIENTATION_TOLERANCE:
            raise fail(
                f"reference SEG frame {frame} orientation {_shown(orientation)} is not the CT's "
                f"{_shown(ct_orientation)}{_mirror_hint(orientation, ct_orientation)}: its pixels would be "
                "placed where they were not drawn"
            )
        spacing = np.asarray(plane.pixel_spacing_mm)
        if np.max(np.abs(spacing - ct_spacing)) > PIXEL_SPACING_TOLERANCE_MM:
            raise fail(
                f"reference SEG frame {frame} pixel spacing {_shown(spacing)} mm (row, column) is not "
                f"the CT's {_shown(ct_spacing)} mm"
            )
        position = np.asarray(plane.position_mm)
        referenced = sorted(sources[index]) if index < len(sources) else []
        if any(uid not in slice_of for uid in referenced):
            continue  # a frame of another series: refused as such (reference_seg)
        if len(referenced) == 1:
            k = slice_of[referenced[0]]
            what = f"the CT slice it references ({k})"
        else:  # no single reference: it must lie on some slice of the CT
            k = int(np.argmin(np.abs(along - float(position @ normal))))
            what = f"the nearest CT slice ({k})"
        offset = position - positions[k]
        off_plane = abs(float(offset @ normal))
        in_plane = float(np.linalg.norm(offset - (offset @ normal) * normal))
        if off_plane > POSITION_TOLERANCE_MM or in_plane > POSITION_TOLERANCE_MM:
            raise fail(
                f"reference SEG frame {frame} lies at {_shown(position)} mm, {off_plane:.3f} mm off the "
                f"plane of {what} at {_shown(positions[k])} mm and {in_plane:.3f} mm across it "
                f"(tolerance {POSITION_TOLERANCE_MM} mm)"
            )


def frame_planes(ds: Dataset, fail: Fail, *, name: str) -> list[FramePlane]:
    """Every frame's plane, per-frame values first, then the shared ones."""
    try:
        shared = (
            ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else Dataset()
        )
        frames = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    except Exception as exc:  # a garbled functional group
        raise fail(f"{name}: functional groups cannot be read: {type(exc).__name__}: {exc}") from exc
    if not frames:
        raise fail(f"{name} has no per-frame functional groups: its frames cannot be placed")
    planes = []
    for index, frame in enumerate(frames):
        where = f"{name} frame {index + 1}"
        orientation = _attribute(
            frame, shared, "PlaneOrientationSequence", "ImageOrientationPatient", 6, fail, where
        )
        spacing = _attribute(frame, shared, "PixelMeasuresSequence", "PixelSpacing", 2, fail, where)
        position = _attribute(frame, shared, "PlanePositionSequence", "ImagePositionPatient", 3, fail, where)
        if not spacing[0] > 0 or not spacing[1] > 0:
            raise fail(f"{where}: PixelSpacing {list(spacing)} is not positive")
        planes.append(
            FramePlane(
                orientation=orientation,
                pixel_spacing_mm=(spacing[0], spacing[1]),
                position_mm=(position[0], position[1], position[2]),
            )
        )
    return planes


def _attribute(
    frame: Dataset, shared: Dataset, group: str, keyword: str, count: int, fail: Fail, where: str
) -> tuple[float, ...]:
    """``count`` numbers of ``keyword`` in the frame's ``group``, else in the shared one."""
    for source in (frame, shared):
        try:
            items = source.get(group)
            item = items[0] if items else None
        except Exception as exc:
            raise fail(f"{where}: {group} cannot be read: {type(exc).__name__}: {exc}") from exc
        if item is not None and keyword in item:
            values = numbers(item, keyword, where, fail, count=count)
            if values is not None:
                return values
    raise fail(f"{where} has no {keyword} (in {group}): where it lies cannot be checked")


def _ct_slice_positions(ct: CtVolume) -> np.ndarray:
    """``(slices, 3)`` LPS mm of each CT slice's first pixel: the decoded headers' own positions
    (the grid is uniform within the decoder's tolerance, each slice is where it says), or the
    grid's when the volume carries no headers."""
    if len(ct.headers) == ct.geometry.size_zyx[0]:
        try:
            positions = np.array(
                [[float(v) for v in h.ImagePositionPatient] for h in ct.headers], dtype=float
            )
            if positions.shape == (len(ct.headers), 3) and np.isfinite(positions).all():
                return positions
        except (AttributeError, TypeError, ValueError):
            pass  # the grid's, below
    slices = np.arange(ct.geometry.size_zyx[0], dtype=float)
    return ct.geometry.index_to_physical(
        np.column_stack([slices, np.zeros_like(slices), np.zeros_like(slices)])
    )


def _mirror_hint(seg: np.ndarray, ct: np.ndarray) -> str:
    reversed_axes = [
        name
        for name, a, b in (("row", seg[:3], ct[:3]), ("column", seg[3:], ct[3:]))
        if float(np.dot(a, b)) < -1.0 + math.sqrt(ORIENTATION_TOLERANCE)
    ]
    if reversed_axes:
        return f" (its {' and '.join(reversed_axes)} direction reversed: a mirror image)"
    return ""


def _shown(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]

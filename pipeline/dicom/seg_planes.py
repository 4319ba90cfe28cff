"""A reference SEG's plane geometry checked against its CT's, before a frame is placed.

Frames are placed on the CT slice each one references, by pixel index (highdicom's
``ignore_spatial_locations=True``): a SEG whose planes are not the CT's would land somewhere
else than where its annotator drew it. A SEG drawn on a left-right mirrored copy of the CT
(its row direction reversed) would land on the mirror image, on fat instead of nodes, and
the series would still be ``ok``. So every frame's plane must be the CT slice's plane: the
same orientation (row and column directions), the same pixel spacing, and its position
(``ImagePositionPatient``, the centre of its first pixel) on the slice it references, or,
for a frame without a source reference, on one of the CT's slices. Per-frame values override
the shared ones, as the enhanced multi-frame functional groups define. A frame whose plane
cannot be read cannot be checked, and is refused too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from pipeline.dicom.header_checks import Fail, numbers
from pipeline.geometry import CtVolume

ORIENTATION_TOLERANCE = 1e-4
"""Direction cosines of the SEG and its CT agree within this (the CT's own slices must agree
within the same: ``pipeline.dicom.ct``)."""
PIXEL_SPACING_TOLERANCE_MM = 1e-3
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

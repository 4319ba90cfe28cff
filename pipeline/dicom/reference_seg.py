"""Place an expert DICOM SEG on its CT grid, voxel for voxel.

LNQ reference SEGs are single dcmqi instances with one segment and frames only
where nodes are. Frames are placed by the CT instance each one references;
a SEG whose frames carry no such references is placed by its frame positions
(highdicom builds the volume, SimpleITK resamples it by nearest neighbour).
The SEG must reference the CT series and share its frame of reference, and every frame must lie
on its CT slice's plane (orientation, pixel spacing, position: ``pipeline.dicom.seg_checks``), or
placing it by index would put it somewhere else than where it was drawn.

Before highdicom sees the file (it builds per-frame tables from NumberOfFrames
first), its header is read with pydicom and every frame claim is checked
against the CT and the bytes in the file (``pipeline.dicom.seg_checks``).
A frame that references a CT instance not in the series is an error: highdicom
would drop it with a logged warning, and the mask would silently lose a slice.
"""

from __future__ import annotations

import logging
import os
from functools import partial

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk

from pipeline.dicom.safe_read import Fail, get_value, read_header
from pipeline.dicom.seg_checks import check_seg_header, check_seg_planes
from pipeline.errors import ReferenceSegError
from pipeline.geometry import CtVolume, Geometry

logger = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def read_reference_seg(path: str, ct: CtVolume) -> np.ndarray:
    """The union of all segments of the SEG at ``path`` as a bool ``[z, y, x]`` mask on ``ct``."""
    label = ct.series_uid or os.path.basename(path)
    fail = partial(ReferenceSegError, series_uid=label)
    header, frame_sources = _checked_header(path, ct, fail)
    check_seg_planes(header, ct, frame_sources, fail, name=os.path.basename(path))
    seg = _read(path, label)
    _check_references(seg, ct, label)
    _check_frames_reference_the_ct(frame_sources, ct, fail)
    referenced = [uids[2] for uids in seg.get_source_image_uids()]
    if referenced and all(frame_sources):
        mask = _by_source_instances(seg, ct, set(referenced), label)
        _check_every_frame_placed(seg, frame_sources, ct, mask, fail)
        return mask
    logger.info("series %s: SEG frames carry no source references; placing by position", label)
    return _by_frame_positions(seg, ct.geometry, label)


def _checked_header(path: str, ct: CtVolume, fail: Fail) -> tuple[pydicom.Dataset, list[set[str]]]:
    """Check the SEG's header before highdicom parses it; the header and the CT instances each
    frame references."""
    name = os.path.basename(path)
    ds, size = read_header(path, fail, what="reference SEG ")
    sop_class = str(get_value(ds, "SOPClassUID", name, fail) or "")
    if sop_class != SEGMENTATION_STORAGE:
        raise fail(f"{name} is SOP class {sop_class or '(none)'}, not Segmentation Storage")
    slices, rows, columns = ct.geometry.size_zyx
    check_seg_header(path, ds, size, fail, ct_slices=slices, ct_rows=rows, ct_columns=columns)
    try:
        return ds, [_source_instances(item) for item in ds.PerFrameFunctionalGroupsSequence]
    except Exception as exc:  # a garbled per-frame item
        raise fail(
            f"{name}: per-frame source references cannot be read: {type(exc).__name__}: {exc}"
        ) from exc


def _check_frames_reference_the_ct(sources: list[set[str]], ct: CtVolume, fail: Fail) -> None:
    """Every instance a frame references is in the CT series: a frame placed on no slice would
    vanish (highdicom drops it with a logged warning)."""
    in_ct = set(ct.sop_instance_uids)
    outside = [(i + 1, uid) for i, uids in enumerate(sources) for uid in sorted(uids - in_ct)]
    if outside:
        frame, uid = outside[0]
        raise fail(
            f"reference SEG frames reference {len({u for _, u in outside})} instance(s) not in the CT "
            f"series ({len(in_ct)} instances), for example frame {frame} references {uid}; "
            "such frames cannot be placed"
        )


def _source_instances(frame: pydicom.Dataset) -> set[str]:
    return {
        str(source.get("ReferencedSOPInstanceUID", ""))
        for derivation in frame.get("DerivationImageSequence", [])
        for source in derivation.get("SourceImageSequence", [])
    }


def _read(path: str, label: str) -> hd.seg.Segmentation:
    name = os.path.basename(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:
        raise ReferenceSegError(
            f"reference SEG {name} is unreadable: {type(exc).__name__}: {exc}", series_uid=label
        ) from exc
    if str(seg.SOPClassUID) != SEGMENTATION_STORAGE:
        raise ReferenceSegError(
            f"{name} is SOP class {seg.SOPClassUID}, not Segmentation Storage", series_uid=label
        )
    return seg


def _check_references(seg: hd.seg.Segmentation, ct: CtVolume, label: str) -> None:
    referenced_series = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    referenced_series |= {uids[1] for uids in seg.get_source_image_uids()}
    if ct.series_uid and ct.series_uid not in referenced_series:
        raise ReferenceSegError(
            f"reference SEG references series {sorted(referenced_series)}, not the CT series {ct.series_uid}",
            series_uid=label,
        )
    seg_for = str(seg.get("FrameOfReferenceUID", ""))
    if seg_for and ct.frame_of_reference_uid and seg_for != ct.frame_of_reference_uid:
        raise ReferenceSegError(
            f"reference SEG frame of reference {seg_for} differs from the CT's {ct.frame_of_reference_uid}",
            series_uid=label,
        )
    rows, cols = int(seg.Rows), int(seg.Columns)
    if (rows, cols) != ct.geometry.size_zyx[1:]:
        raise ReferenceSegError(
            f"reference SEG frames are {rows}x{cols}, the CT slices "
            f"{ct.geometry.size_zyx[1]}x{ct.geometry.size_zyx[2]}",
            series_uid=label,
        )


def _by_source_instances(
    seg: hd.seg.Segmentation, ct: CtVolume, referenced: set[str], label: str
) -> np.ndarray:
    missing = referenced - set(ct.sop_instance_uids)
    if missing:
        raise ReferenceSegError(
            f"reference SEG references {len(missing)} instance(s) not in the CT series, "
            f"for example {sorted(missing)[0]}",
            series_uid=label,
        )
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(ct.sop_instance_uids),
            combine_segments=False,
            ignore_spatial_locations=True,
            assert_missing_frames_are_empty=True,
            dtype=np.uint8,
        )
    except Exception as exc:
        raise ReferenceSegError(
            f"reference SEG frames cannot be placed by source instance: {type(exc).__name__}: {exc}",
            series_uid=label,
        ) from exc
    return np.any(pixels > 0, axis=-1)


def _check_every_frame_placed(
    seg: hd.seg.Segmentation, sources: list[set[str]], ct: CtVolume, mask: np.ndarray, fail: Fail
) -> None:
    """Each frame's foreground is in the mask on the slice it references: no frame was left out
    (highdicom leaves out, with at most a logged warning, frames it cannot place)."""
    slice_of = {uid: k for k, uid in enumerate(ct.sop_instance_uids)}
    for index, uids in enumerate(sources):
        if len(uids) != 1:
            continue  # a frame derived from several slices: its placement is highdicom's to judge
        k = slice_of[next(iter(uids))]
        try:
            frame = np.asarray(seg.get_frame(index + 1)) > 0
        except Exception as exc:
            raise fail(
                f"reference SEG frame {index + 1} cannot be read: {type(exc).__name__}: {exc}"
            ) from exc
        lost = int(np.count_nonzero(frame & ~mask[k]))
        if lost:
            raise fail(
                f"reference SEG frame {index + 1}: {lost} of its {int(frame.sum())} foreground pixels "
                f"are not in the mask at slice {k}; the frame was not placed"
            )


def _by_frame_positions(seg: hd.seg.Segmentation, grid: Geometry, label: str) -> np.ndarray:
    try:
        volume = seg.get_volume(combine_segments=False, dtype=np.uint8)
    except Exception as exc:
        raise ReferenceSegError(
            f"reference SEG frames cannot be placed by position: {type(exc).__name__}: {exc}",
            series_uid=label,
        ) from exc
    union = volume.with_array(np.any(volume.array > 0, axis=-1).astype(np.uint8))
    image = union.to_simpleitk()
    placed = sitk.Resample(
        image, grid.empty_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    return sitk.GetArrayFromImage(placed).astype(bool)

"""Place an expert DICOM SEG on its CT grid, voxel for voxel.

LNQ reference SEGs are single dcmqi instances with one segment and frames only
where nodes are. Frames are placed by the CT instance each one references;
a SEG whose frames carry no such references is placed by its frame positions
(highdicom builds the volume, SimpleITK resamples it by nearest neighbour).
The SEG must reference the CT series and share its frame of reference.
"""

from __future__ import annotations

import logging
import os

import highdicom as hd
import numpy as np
import SimpleITK as sitk

from pipeline.dicom.volume import CtVolume, Geometry
from pipeline.errors import ReferenceSegError

logger = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def read_reference_seg(path: str, ct: CtVolume) -> np.ndarray:
    """The union of all segments of the SEG at ``path`` as a bool ``[z, y, x]`` mask on ``ct``."""
    label = ct.series_uid or os.path.basename(path)
    seg = _read(path, label)
    _check_references(seg, ct, label)
    referenced = [uids[2] for uids in seg.get_source_image_uids()]
    if referenced and _every_frame_references_an_instance(seg):
        return _by_source_instances(seg, ct, set(referenced), label)
    logger.info("series %s: SEG frames carry no source references; placing by position", label)
    return _by_frame_positions(seg, ct.geometry, label)


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


def _every_frame_references_an_instance(seg: hd.seg.Segmentation) -> bool:
    for frame in seg.get("PerFrameFunctionalGroupsSequence", []):
        derivations = frame.get("DerivationImageSequence", [])
        if not any(item.get("SourceImageSequence") for item in derivations):
            return False
    return True


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

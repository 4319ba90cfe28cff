"""A node's RECIST axes as lines on the CT image of its measurement slice (SR ``SCOORD``).

The axes are measured on one axial slice of the CT grid, so each one's two end points (patient
LPS mm) lie on that slice's plane. Image viewers draw a line on an image from 2D image
coordinates plus the image it was ``SELECTED FROM`` (PS3.3 C.18.6: column and row, (0, 0) the
top left corner of the top left pixel, so a pixel centre is at +0.5); that is what this module
works out: the slice's CT instance and the end points in its image coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom

from pipeline.errors import SegWriteError
from pipeline.geometry import Geometry

ON_SLICE_TOLERANCE = 1e-3
"""An end point is on a slice when its fractional slice index is this close to an integer."""


@dataclass(frozen=True)
class ImageRef:
    """A CT instance: what a 2D line is drawn on."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class ImageLine:
    """An axis drawn on one image: its end points as (column, row) image coordinates."""

    image: ImageRef
    slice_index: int
    ends_image: tuple[tuple[float, float], tuple[float, float]]


def ct_images(seg: pydicom.Dataset, sop_instance_uids: Sequence[str]) -> list[ImageRef]:
    """The CT instances in slice order (``sop_instance_uids``, as the CT volume holds them), each
    with the SOP class the SEG records for it: the SEG references every source instance."""
    series_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    classes = {
        str(item.ReferencedSOPInstanceUID): str(item.ReferencedSOPClassUID)
        for series in seg.ReferencedSeriesSequence
        for item in series.get("ReferencedInstanceSequence", [])
    }
    unknown = [uid for uid in sop_instance_uids if uid not in classes]
    if unknown:
        raise SegWriteError(
            f"{len(unknown)} CT instances are not referenced by the SEG (first {unknown[0]})",
            series_uid=series_uid,
        )
    return [ImageRef(classes[uid], uid) for uid in sop_instance_uids]


def image_line(
    ends_mm: Sequence[Sequence[float]], geometry: Geometry, images: Sequence[ImageRef], *, series_uid: str
) -> ImageLine:
    """The line between two LPS points of one slice, on that slice's image."""
    index = geometry.physical_to_index(np.asarray(ends_mm, dtype=float))  # [z, y, x]
    slices = np.rint(index[:, 0])
    if slices[0] != slices[1] or np.abs(index[:, 0] - slices).max() > ON_SLICE_TOLERANCE:
        raise SegWriteError(
            f"axis end points {np.round(np.asarray(ends_mm, dtype=float), 3).tolist()} are not on one slice "
            f"(fractional slice indices {np.round(index[:, 0], 4).tolist()})",
            series_uid=series_uid,
        )
    k = int(slices[0])
    if not 0 <= k < len(images):
        raise SegWriteError(f"axis on slice {k}, outside the {len(images)} CT slices", series_uid=series_uid)
    columns, rows = index[:, 2] + 0.5, index[:, 1] + 0.5  # pixel centres are at +0.5
    ends = ((float(columns[0]), float(rows[0])), (float(columns[1]), float(rows[1])))
    return ImageLine(images[k], k, ends)

"""Axis end points to a 2D line on the CT image they were measured on (SR SCOORD), and back."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipeline.dicom.sr_lines import ImageRef, ct_images, image_line
from pipeline.dicom.tracking import NodeTracking, line_tracking
from pipeline.errors import SegWriteError
from pipeline.geometry import Geometry

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


GRIDS = {
    "axial": Geometry((20, 64, 80), (-60.0, -40.0, -300.0), (0.7, 0.8, 2.5), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
    "oblique": Geometry((12, 50, 40), (10.0, -20.0, 5.0), (0.6, 0.9, 3.0), tuple(_rotation(3).ravel())),
}
IMAGES = [ImageRef(CT_IMAGE, f"1.2.3.{k}") for k in range(20)]


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_a_line_lands_on_its_slice_at_pixel_centres_plus_a_half(grid: str) -> None:
    """PS3.3 C.18.6: image coordinates put the top left corner of the top left pixel at (0, 0),
    so the centre of pixel (row j, column i) is at (i + 0.5, j + 0.5); checked against
    highdicom's own transformer from image coordinates to patient space."""
    geometry = GRIDS[grid]
    index = np.array([[7, 10.25, 3.5], [7, 31.0, 29.75]])  # [z, y, x]: two points on slice 7
    ends_mm = geometry.index_to_physical(index)
    line = image_line(ends_mm, geometry, IMAGES, series_uid="1.2")
    assert line.slice_index == 7 and line.image == IMAGES[7]
    np.testing.assert_allclose(line.ends_image, index[:, [2, 1]] + 0.5, atol=1e-9)
    direction = geometry.direction_matrix
    to_patient = hd.spatial.ImageToReferenceTransformer(
        image_position=geometry.index_to_physical(np.array([[7, 0, 0]]))[0],
        image_orientation=np.concatenate([direction[:, 0], direction[:, 1]]),
        pixel_spacing=(geometry.spacing_mm[1], geometry.spacing_mm[0]),  # (between rows, between columns)
    )
    np.testing.assert_allclose(to_patient(np.asarray(line.ends_image)), ends_mm, atol=1e-9)


def test_points_off_a_slice_or_on_two_slices_are_refused() -> None:
    geometry = GRIDS["axial"]
    between = geometry.index_to_physical(np.array([[4.5, 10, 10], [4.5, 20, 20]]))
    with pytest.raises(SegWriteError, match=r"not on one slice \(fractional slice indices \[4.5, 4.5\]\)"):
        image_line(between, geometry, IMAGES, series_uid="1.2")
    two = geometry.index_to_physical(np.array([[4, 10, 10], [5, 20, 20]]))
    with pytest.raises(SegWriteError, match="not on one slice"):
        image_line(two, geometry, IMAGES, series_uid="1.2")
    outside = geometry.index_to_physical(np.array([[25, 10, 10], [25, 20, 20]]))
    with pytest.raises(SegWriteError, match="axis on slice 25, outside the 20 CT slices"):
        image_line(outside, geometry, IMAGES, series_uid="1.2")


def _seg_referencing(uids: list[str]) -> pydicom.Dataset:
    seg = pydicom.Dataset()
    series = pydicom.Dataset()
    series.SeriesInstanceUID = "1.2.9"
    series.ReferencedInstanceSequence = []
    for uid in uids:
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE
        item.ReferencedSOPInstanceUID = uid
        series.ReferencedInstanceSequence.append(item)
    seg.ReferencedSeriesSequence = [series]
    return seg


def test_ct_images_take_their_class_from_the_seg_in_slice_order() -> None:
    seg = _seg_referencing(["1.2.3.2", "1.2.3.0", "1.2.3.1"])
    assert ct_images(seg, ["1.2.3.0", "1.2.3.1", "1.2.3.2"]) == IMAGES[:3]


def test_a_ct_instance_the_seg_does_not_reference_is_refused() -> None:
    seg = _seg_referencing(["1.2.3.0"])
    with pytest.raises(
        SegWriteError, match=r"1 CT instances are not referenced by the SEG \(first 1.2.3.1\)"
    ):
        ct_images(seg, ["1.2.3.0", "1.2.3.1"])


def test_a_lines_tracking_is_the_nodes_plus_its_name() -> None:
    node = NodeTracking("Lymph node 4", "2.25.1234")
    line = line_tracking(node, "short axis")
    assert line.identifier == "Lymph node 4 short axis"
    assert line.uid != node.uid and line.uid.startswith("2.25.") and len(line.uid) <= 64
    assert line_tracking(node, "short axis") == line  # a rerun gives the same UID
    assert line_tracking(NodeTracking("Lymph node 4", "2.25.1235"), "short axis").uid != line.uid

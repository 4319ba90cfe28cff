"""Reference SEG placement on the CT grid, and its rejections."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.reference_seg import read_reference_seg
from pipeline.errors import ReferenceSegError
from tests.support.phantoms import make_phantom


def test_phantom_seg_lands_voxel_for_voxel(phantom) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    mask = read_reference_seg(str(phantom.seg_path), ct)
    np.testing.assert_array_equal(mask, phantom.mask)


def test_seg_keeps_only_frames_with_nodes(phantom) -> None:
    seg = pydicom.dcmread(phantom.seg_path)
    slices_with_nodes = int(np.count_nonzero(phantom.mask.any(axis=(1, 2))))
    assert int(seg.NumberOfFrames) == slices_with_nodes < phantom.mask.shape[0]


def test_placement_by_frame_positions_agrees(phantom, tmp_path: Path) -> None:
    """Without per-frame source references the SEG is placed by frame positions."""
    ds = pydicom.dcmread(phantom.seg_path)
    for frame in ds.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence
    stripped = tmp_path / "stripped.dcm"
    ds.save_as(stripped)
    ct = decode_ct_series(str(phantom.ct_dir))
    np.testing.assert_array_equal(read_reference_seg(str(stripped), ct), phantom.mask)


def test_real_dcmqi_seg_on_its_ct(real_ct: Path) -> None:
    ct = decode_ct_series(str(real_ct / "dcmqi-ct3slice" / "ct"))
    mask = read_reference_seg(str(real_ct / "dcmqi-ct3slice" / "liver_seg.dcm"), ct)
    seg = hd.seg.segread(real_ct / "dcmqi-ct3slice" / "liver_seg.dcm")
    # Each frame references one CT instance; it must land on that instance's slice.
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = ct.sop_instance_uids.index(source)
        np.testing.assert_array_equal(mask[k], seg.get_frame(i + 1) > 0)
    assert mask.sum() > 100000


def test_rejects_seg_of_another_series(phantom, tmp_path: Path) -> None:
    other = make_phantom(tmp_path / "other", shape_zyx=(40, 128, 128), seed=99)
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(ReferenceSegError, match=f"not the CT series {phantom.series_uid}"):
        read_reference_seg(str(other.seg_path), ct)


def test_rejects_unreadable_seg(phantom, tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"DICM" * 10)
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(ReferenceSegError, match="bad.dcm is unreadable"):
        read_reference_seg(str(bad), ct)


def test_rejects_seg_referencing_missing_instances(phantom, tmp_path: Path) -> None:
    ct_dir = tmp_path / "ct"
    shutil.copytree(phantom.ct_dir, ct_dir)
    ct = decode_ct_series(str(ct_dir))
    # keep the same series but drop the instances the SEG points at (end slices keep the stack)
    seg = pydicom.dcmread(phantom.seg_path)
    first_ref = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    uid = first_ref.SourceImageSequence[0].ReferencedSOPInstanceUID
    fake = type(ct)(
        hu=ct.hu,
        geometry=ct.geometry,
        series_uid=ct.series_uid,
        study_uid=ct.study_uid,
        frame_of_reference_uid=ct.frame_of_reference_uid,
        patient_id=ct.patient_id,
        sop_instance_uids=tuple("1.2.3" if u == uid else u for u in ct.sop_instance_uids),
    )
    with pytest.raises(ReferenceSegError, match="instance\\(s\\) not in the CT series"):
        read_reference_seg(str(phantom.seg_path), fake)


def test_rejects_other_frame_of_reference(phantom, tmp_path: Path) -> None:
    ds = pydicom.dcmread(phantom.seg_path)
    ds.FrameOfReferenceUID = "1.2.3.4.5"
    path = tmp_path / "for.dcm"
    ds.save_as(path)
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(ReferenceSegError, match="frame of reference 1.2.3.4.5 differs"):
        read_reference_seg(str(path), ct)


def test_rejects_non_seg_object(phantom) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(ReferenceSegError, match="unreadable|not Segmentation Storage"):
        read_reference_seg(str(ct.source_files[0]), ct)

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
    with pytest.raises(ReferenceSegError, match="bad.dcm is (unreadable|not a DICOM file)"):
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


# ---- header claims checked before highdicom parses the SEG (issue 9) ----------------------------


def _edited_seg(phantom, tmp_path: Path, **changes: object) -> Path:
    ds = pydicom.dcmread(phantom.seg_path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    path = tmp_path / "edited.dcm"
    ds.save_as(path)
    return path


def test_rejects_frame_referencing_an_instance_outside_the_ct(phantom, tmp_path: Path) -> None:
    """highdicom dropped such a frame with a logged warning: the middle frame of the first node
    went missing, the node split in two, and the series came out ok with 4 nodes instead of 3."""
    ds = pydicom.dcmread(phantom.seg_path)
    frame = ds.PerFrameFunctionalGroupsSequence[12]  # on slice 12, the middle of the first node (9 to 15)
    frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID = "1.2.826.0.1.999"
    path = tmp_path / "outside.dcm"
    ds.save_as(path)
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(
        ReferenceSegError,
        match=r"1 instance\(s\) not in the CT series \(40 instances\), "
        r"for example frame 13 references 1.2.826.0.1.999",
    ):
        read_reference_seg(str(path), ct)


def test_frame_count_bomb_is_refused_before_highdicom(phantom, tmp_path: Path, monkeypatch) -> None:
    """NumberOfFrames 2^31-1 grew highdicom's per-frame tables to 22.7 GB before the kernel killed it."""
    path = _edited_seg(phantom, tmp_path, NumberOfFrames=2**31 - 1)
    ct = decode_ct_series(str(phantom.ct_dir))

    def not_reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("highdicom must not parse a SEG whose header fails the checks")

    monkeypatch.setattr(hd.seg, "segread", not_reached)
    with pytest.raises(
        ReferenceSegError,
        match=r"edited.dcm: NumberOfFrames 2147483647, expected 1 to 40 .*40 slices x 1 segment\(s\)",
    ):
        read_reference_seg(str(path), ct)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"NumberOfFrames": 15}, r"NumberOfFrames 15, but PerFrameFunctionalGroupsSequence has 16 item\(s\)"),
        ({"BitsAllocated": 8}, "BitsAllocated 8 for a BINARY SEG, expected 1"),
        ({"SegmentationType": "SURFACE"}, "SegmentationType 'SURFACE', expected one of"),
        ({"Rows": 64}, "frames are 64x128, the CT slices 128x128"),
        ({"SamplesPerPixel": 3}, "SamplesPerPixel 3, a SEG has 1"),
    ],
)
def test_rejects_frame_claims_that_disagree(
    phantom, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = _edited_seg(phantom, tmp_path, **changes)
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(ReferenceSegError, match=f"edited.dcm: {message}"):
        read_reference_seg(str(path), ct)


def test_rejects_binary_pixel_data_of_the_wrong_size(phantom, tmp_path: Path) -> None:
    ds = pydicom.dcmread(phantom.seg_path)
    ds.PixelData = ds.PixelData[:-2]
    path = tmp_path / "short.dcm"
    ds.save_as(path)
    ct = decode_ct_series(str(phantom.ct_dir))
    needed = 16 * 128 * 128 // 8
    with pytest.raises(
        ReferenceSegError,
        match=rf"short.dcm: PixelData holds {needed - 2} bytes, "
        rf"16 frames of 128 x 128 x 1 bit\(s\) need {needed}",
    ):
        read_reference_seg(str(path), ct)


def test_rejects_truncated_seg(phantom, tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(phantom.seg_path.read_bytes()[:-1000])
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(
        ReferenceSegError, match=r"cut.dcm: PixelData claims 32768 bytes, the file holds 31768"
    ):
        read_reference_seg(str(path), ct)


def test_rejects_segment_numbers_that_frames_do_not_match(phantom, tmp_path: Path) -> None:
    """Found by the fuzz test: a flipped SegmentNumber (1 -> 28929) left every frame without a
    described segment; highdicom placed none of them and the series came out ok with no nodes."""
    ds = pydicom.dcmread(phantom.seg_path)
    ds.SegmentSequence[0].SegmentNumber = 28929
    path = tmp_path / "renumbered.dcm"
    ds.save_as(path)
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(ReferenceSegError, match="SegmentNumber values 28929; segments are numbered 1 to 1"):
        read_reference_seg(str(path), ct)


def test_rejects_frame_of_an_undescribed_segment(phantom, tmp_path: Path) -> None:
    ds = pydicom.dcmread(phantom.seg_path)
    # highdicom names the one segment in the shared functional groups, for every frame at once
    ds.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence[0].ReferencedSegmentNumber = 2
    path = tmp_path / "segment2.dcm"
    ds.save_as(path)
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(
        ReferenceSegError, match="frame 1 belongs to segment 2, the SEG describes segments 1 to 1"
    ):
        read_reference_seg(str(path), ct)


def test_a_frame_left_out_by_placement_is_an_error(phantom, monkeypatch) -> None:
    """Whatever the cause, a frame whose pixels are not in the mask fails the series."""
    original = hd.seg.Segmentation.get_pixels_by_source_instance

    def dropping_one_slice(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        pixels = original(self, *args, **kwargs)
        pixels[12] = 0  # the middle slice of the first node
        return pixels

    monkeypatch.setattr(hd.seg.Segmentation, "get_pixels_by_source_instance", dropping_one_slice)
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(
        ReferenceSegError,
        match=r"frame \d+: \d+ of its \d+ foreground pixels are not in the mask at slice 12",
    ):
        read_reference_seg(str(phantom.seg_path), ct)

"""Predicted SEGs: valid for dciodvfy, read back by highdicom and converted by dcmqi."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.reference_seg import read_reference_seg
from pipeline.dicom.seg_writer import (
    SEGMENT_LABEL,
    SPLIT_ALGORITHM_NAME,
    nodes_seg,
    prediction_seg,
    seg_bytes,
    segment_tracking,
)
from pipeline.dicom.tracking import node_tracking
from pipeline.enums import REFERENCE_MODEL
from pipeline.errors import SegWriteError
from pipeline.evaluate.images import read_label_image
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled

DCIODVFY = shutil.which("dciodvfy")
SEGIMAGE2ITKIMAGE = Path(sys.executable).with_name("segimage2itkimage")


def _write(tmp_path: Path, mask: np.ndarray, ct, name: str = "pred.dcm") -> Path:
    path = tmp_path / name
    path.write_bytes(seg_bytes(prediction_seg(mask, ct, model_name="tiny-window", model_version="1.2")))
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    if DCIODVFY is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed; make test installs it")
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def test_seg_is_valid_and_reads_back(phantom, tmp_path: Path) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    path = _write(tmp_path, phantom.mask, ct)
    assert dciodvfy_errors(path) == []
    np.testing.assert_array_equal(read_reference_seg(str(path), ct), phantom.mask)
    seg = hd.seg.segread(path)
    (description,) = [seg.get_segment_description(n) for n in seg.segment_numbers]
    assert description.segment_label == SEGMENT_LABEL
    assert description.segmented_property_type.value == "59441001"
    assert description.segmented_property_category.value == "91723000"
    assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    assert description.algorithm_identification[0].AlgorithmName == "tiny-window"
    assert description.algorithm_identification[0].AlgorithmVersion == "1.2"
    assert seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == phantom.series_uid
    referenced = {
        i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == set(phantom.sop_instance_uids)
    assert int(seg.NumberOfFrames) == int(phantom.mask.any(axis=(1, 2)).sum())  # empty frames omitted
    assert seg.StudyInstanceUID == phantom.study_uid and seg.PatientID == phantom.patient_id


def test_dcmqi_converts_it_to_the_same_mask(phantom, tmp_path: Path) -> None:
    if not SEGIMAGE2ITKIMAGE.exists():
        pytest.skip("dcmqi is not installed; make test installs it")
    ct = decode_ct_series(str(phantom.ct_dir))
    path = _write(tmp_path, phantom.mask, ct)
    out = tmp_path / "dcmqi"
    out.mkdir()
    done = subprocess.run(
        [str(SEGIMAGE2ITKIMAGE), "--inputDICOM", str(path), "--outputDirectory", str(out), "-t", "nrrd"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (converted,) = sorted(out.glob("*.nrrd"))
    image = sitk.ReadImage(str(converted))
    placed = sitk.Resample(image, ct.geometry.empty_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(placed) > 0, phantom.mask)


def test_empty_prediction_gives_a_valid_one_frame_seg(phantom, tmp_path: Path) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    path = _write(tmp_path, np.zeros_like(phantom.mask), ct)
    assert dciodvfy_errors(path) == []
    seg = pydicom.dcmread(path)
    assert int(seg.NumberOfFrames) == 1
    assert not read_reference_seg(str(path), ct).any()


def test_rerun_gives_the_same_identity(phantom, tmp_path: Path) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    a = pydicom.dcmread(_write(tmp_path, phantom.mask, ct, "a.dcm"))
    b = pydicom.dcmread(_write(tmp_path, phantom.mask, ct, "b.dcm"))
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    assert a.SOPInstanceUID.startswith("2.25.")


def test_real_ct_model_run_gives_a_valid_seg(real_ct: Path, tmp_path: Path) -> None:
    """A content-only model on real scanner CT (JPEG 2000, empty identifiers): the SEG must be valid."""
    from pipeline.models.torchscript import TorchScriptModel
    from tests.support.models import HuWindow, save_torchscript

    model_path = save_torchscript(
        HuWindow(40.0, 30.0), tmp_path / "soft.pt", spacing_mm=[3.0, 2.0, 2.0], patch_size=(16, 64, 64)
    )
    model = TorchScriptModel(str(model_path), device=__import__("torch").device("cpu"))
    for name in (
        "lpctdx-A0001-5mm-kernelB",
        "lpctdx-A0002-8mm-B40f",
        "totalseg-example-j2k",
        "dcmqi-ct3slice/ct",
    ):
        ct = decode_ct_series(str(real_ct / name))
        mask = model.predict(ct).on_ct_grid(ct.geometry)
        assert mask.shape == ct.hu.shape
        path = tmp_path / f"{name.replace('/', '_')}.dcm"
        path.write_bytes(
            seg_bytes(prediction_seg(mask, ct, model_name=model.name, model_version=model.version))
        )
        assert dciodvfy_errors(path) == [], name
        if ct.series_uid:  # a SEG of an anonymised CT references stand-in UIDs, not the CT's
            np.testing.assert_array_equal(read_reference_seg(str(path), ct), mask)


def test_mask_shape_must_match(phantom) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    with pytest.raises(SegWriteError, match="mask shape"):
        prediction_seg(np.zeros((2, 2, 2), bool), ct, model_name="m", model_version="1")


def test_the_validity_check_itself_sees_errors(phantom, tmp_path: Path) -> None:
    """Guard against a check that cannot fail: a SEG without a segment label is reported."""
    ct = decode_ct_series(str(phantom.ct_dir))
    ds = pydicom.dcmread(_write(tmp_path, phantom.mask, ct))
    del ds.SegmentSequence[0].SegmentLabel
    ds.save_as(tmp_path / "broken.dcm")
    assert any("SegmentLabel" in e for e in dciodvfy_errors(tmp_path / "broken.dcm"))


def test_incomplete_references_in_the_ct_are_not_copied(phantom, tmp_path: Path) -> None:
    """Scanner CT can carry a ReferencedStudySequence item without its SOP class (seen in TCIA data)."""
    ct_dir = tmp_path / "ct"
    shutil.copytree(phantom.ct_dir, ct_dir)
    for path in ct_dir.iterdir():
        ds = pydicom.dcmread(path)
        item = pydicom.Dataset()
        item.ReferencedSOPInstanceUID = "1.2.3.4.5"
        ds.ReferencedStudySequence = [item]
        ds.save_as(path)
    ct = decode_ct_series(str(ct_dir))
    path = _write(tmp_path, phantom.mask, ct)
    assert dciodvfy_errors(path) == []
    assert "ReferencedStudySequence" not in pydicom.dcmread(path)


# --- one segment per node -------------------------------------------------------------------


def _labelled(phantom):  # type: ignore[no-untyped-def]
    ct = decode_ct_series(str(phantom.ct_dir))
    labels = label_nodes(phantom.mask, ct.geometry)
    return ct, labels, measure_labelled(labels, ct.geometry, hu=ct.hu)


def _write_nodes(tmp_path: Path, labels, ct, nodes, *, source="prediction", name="nodes.dcm") -> Path:  # type: ignore[no-untyped-def]
    model = ("tiny-window", "1.2") if source == "prediction" else (REFERENCE_MODEL, "LNQ2023")
    seg = nodes_seg(labels, ct, nodes, model_name=model[0], model_version=model[1], source=source)
    path = tmp_path / name
    path.write_bytes(seg_bytes(seg))
    return path


def test_nodes_seg_has_one_tracked_segment_per_node(phantom, tmp_path: Path) -> None:
    ct, labels, nodes = _labelled(phantom)
    assert len(nodes) == 3
    path = _write_nodes(tmp_path, labels, ct, nodes)
    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "BINARY"
    assert list(seg.segment_numbers) == [n.node_index for n in nodes]
    for node in nodes:
        description = seg.get_segment_description(node.node_index)
        expected = node_tracking(
            phantom.series_uid,
            model_name="tiny-window",
            model_version="1.2",
            source="prediction",
            node_index=node.node_index,
        )
        assert description.segment_label == f"Lymph node {node.node_index}"
        assert (description.tracking_id, description.tracking_uid) == (expected.identifier, expected.uid)
        assert description.segmented_property_type.value == "59441001"
        assert description.segmented_property_category.value == "91723000"
        assert [r.value for r in description.anatomic_regions] == ["72410000"]
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        assert description.algorithm_identification[0].AlgorithmName == "tiny-window"
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(ct.sop_instance_uids),
        combine_segments=False,
        ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True,
        dtype=np.uint8,
    )
    for k, node in enumerate(nodes):
        np.testing.assert_array_equal(pixels[..., k] > 0, labels == node.node_index)
    assert len({d.tracking_uid for d in (seg.get_segment_description(n.node_index) for n in nodes)}) == 3


def test_nodes_seg_reads_back_as_the_union_in_our_readers(phantom, tmp_path: Path) -> None:
    """`lnq evaluate` and the reference reader score the union: LNQ2023 scores do not change."""
    ct, labels, nodes = _labelled(phantom)
    path = _write_nodes(tmp_path, labels, ct, nodes)
    np.testing.assert_array_equal(read_reference_seg(str(path), ct), phantom.mask)
    image = read_label_image(str(path)).image
    placed = sitk.Resample(image, ct.geometry.empty_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(placed) > 0, phantom.mask)


def test_dcmqi_converts_every_node_segment(phantom, tmp_path: Path) -> None:
    if not SEGIMAGE2ITKIMAGE.exists():
        pytest.skip("dcmqi is not installed; make test installs it")
    ct, labels, nodes = _labelled(phantom)
    path = _write_nodes(tmp_path, labels, ct, nodes)
    out = tmp_path / "dcmqi"
    out.mkdir()
    done = subprocess.run(
        [str(SEGIMAGE2ITKIMAGE), "--inputDICOM", str(path), "--outputDirectory", str(out), "-t", "nrrd"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.glob("*.nrrd")) == [f"{n.node_index}.nrrd" for n in nodes]
    for node in nodes:
        image = sitk.ReadImage(str(out / f"{node.node_index}.nrrd"))
        placed = sitk.Resample(
            image, ct.geometry.empty_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0
        )
        np.testing.assert_array_equal(sitk.GetArrayFromImage(placed) > 0, labels == node.node_index)


def test_reference_nodes_are_a_semiautomatic_split_with_their_own_tracking(phantom, tmp_path: Path) -> None:
    ct, labels, nodes = _labelled(phantom)
    reference = hd.seg.segread(_write_nodes(tmp_path, labels, ct, nodes, source="reference", name="r.dcm"))
    prediction = hd.seg.segread(_write_nodes(tmp_path, labels, ct, nodes, name="p.dcm"))
    assert dciodvfy_errors(tmp_path / "r.dcm") == []
    description = reference.get_segment_description(1)
    assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
    assert description.algorithm_identification[0].AlgorithmName == SPLIT_ALGORITHM_NAME
    assert reference.SOPInstanceUID != prediction.SOPInstanceUID
    assert description.tracking_uid != prediction.get_segment_description(1).tracking_uid


def test_nodes_seg_rerun_gives_the_same_identity_and_tracking(phantom, tmp_path: Path) -> None:
    ct, labels, nodes = _labelled(phantom)
    a = pydicom.dcmread(_write_nodes(tmp_path, labels, ct, nodes, name="a.dcm"))
    b = pydicom.dcmread(_write_nodes(tmp_path, labels, ct, nodes, name="b.dcm"))
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    assert [s.TrackingUID for s in a.SegmentSequence] == [s.TrackingUID for s in b.SegmentSequence]
    # the whole SEG is the same but for the clock (highdicom's random dimension organization UID
    # is replaced by a derived one)
    assert a.DimensionOrganizationSequence[0].DimensionOrganizationUID.startswith("2.25.")
    assert _without_clock(a) == _without_clock(b)


CLOCK = {"ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "ContributionDateTime"}


def _without_clock(ds: pydicom.Dataset) -> pydicom.Dataset:
    def blank(dataset: pydicom.Dataset, element: pydicom.DataElement) -> None:
        if element.keyword in CLOCK:
            element.value = ""

    ds.walk(blank)
    return ds


def test_no_node_gives_a_valid_one_frame_seg(phantom, tmp_path: Path) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    labels = np.zeros(ct.geometry.size_zyx, dtype=np.uint16)
    path = _write_nodes(tmp_path, labels, ct, [])
    assert dciodvfy_errors(path) == []
    seg = pydicom.dcmread(path)
    assert int(seg.NumberOfFrames) == 1 and len(seg.SegmentSequence) == 1
    assert "TrackingUID" not in seg.SegmentSequence[0]
    assert not read_reference_seg(str(path), ct).any()


def test_nodes_must_match_the_labels(phantom) -> None:
    ct, labels, nodes = _labelled(phantom)
    with pytest.raises(SegWriteError, match=r"nodes are numbered \[1, 2\], the labels 1..3"):
        nodes_seg(labels, ct, nodes[:2], model_name="m", model_version="1")
    with pytest.raises(SegWriteError, match="labels shape"):
        nodes_seg(labels[:2], ct, nodes, model_name="m", model_version="1")


def test_segment_tracking_is_what_the_nodes_table_gets(phantom, tmp_path: Path) -> None:
    ct, labels, nodes = _labelled(phantom)
    seg = pydicom.dcmread(_write_nodes(tmp_path, labels, ct, nodes))
    expected = {
        n.node_index: node_tracking(
            phantom.series_uid,
            model_name="tiny-window",
            model_version="1.2",
            source="prediction",
            node_index=n.node_index,
        )
        for n in nodes
    }
    assert segment_tracking(seg) == expected


def test_beyond_the_cap_smaller_nodes_share_one_untracked_segment(phantom, tmp_path: Path) -> None:
    """A model predicting specks of noise: the largest nodes keep their own tracked segment and SR
    group, the rest share one segment, and the union of all segments is still the whole mask."""
    from pipeline.dicom.seg_writer import nodes_seg, segment_tracking
    from pipeline.dicom.sr import nodes_sr

    ct, labels, nodes = _labelled(phantom)
    assert len(nodes) == 3
    seg = nodes_seg(labels, ct, nodes, model_name="noise", model_version="1", max_node_segments=2)
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3]
    assert sorted(segment_tracking(seg)) == [1, 2]  # the third segment is the untracked rest
    path = tmp_path / "capped.dcm"
    seg.save_as(path)
    np.testing.assert_array_equal(read_reference_seg(str(path), ct), phantom.mask)
    from pipeline.dicom.sr import read_measurements, sr_bytes

    with pytest.raises(SegWriteError, match="segment"):  # every reported node needs its segment
        nodes_sr(seg, nodes, ct=ct, model_name="noise", model_version="1")
    report = nodes_sr(seg, nodes[:2], ct=ct, model_name="noise", model_version="1")
    assert report is not None
    sr_path = tmp_path / "capped-sr.dcm"
    sr_path.write_bytes(sr_bytes(report))
    reported = sorted(m["tracking_uid"] for m in read_measurements(str(sr_path)))
    assert reported == sorted(t.uid for t in segment_tracking(seg).values())


def test_the_decoders_headers_give_the_seg_that_reading_the_files_gives(phantom, tmp_path: Path) -> None:
    """The SEG writer references the headers the decoder kept (no second read of every CT file):
    the SEG is element for element the one made from headers read from the files again."""
    import dataclasses

    ct, labels, nodes = _labelled(phantom)
    assert len(ct.headers) == len(ct.source_files) and all("PixelData" not in h for h in ct.headers)
    from_files = dataclasses.replace(ct, headers=())
    kept = pydicom.dcmread(_write_nodes(tmp_path, labels, ct, nodes, name="kept.dcm"))
    reread = pydicom.dcmread(_write_nodes(tmp_path, labels, from_files, nodes, name="reread.dcm"))
    kept, reread = _without_clock(kept), _without_clock(reread)
    assert kept == reread
    assert kept.PixelData == reread.PixelData

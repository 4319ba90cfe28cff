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
from pipeline.dicom.seg_writer import SEGMENT_LABEL, prediction_seg, seg_bytes

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
    placed = sitk.Resample(
        image, ct.geometry.empty_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0
    )
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
        mask = model.predict(ct).mask
        assert mask.shape == ct.hu.shape
        path = tmp_path / f"{name.replace('/', '_')}.dcm"
        path.write_bytes(
            seg_bytes(prediction_seg(mask, ct, model_name=model.name, model_version=model.version))
        )
        assert dciodvfy_errors(path) == [], name
        if ct.series_uid:  # a SEG of an anonymised CT references stand-in UIDs, not the CT's
            np.testing.assert_array_equal(read_reference_seg(str(path), ct), mask)


def test_mask_shape_must_match(phantom) -> None:
    from pipeline.errors import SegWriteError

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

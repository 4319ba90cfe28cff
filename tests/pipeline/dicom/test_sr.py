"""TID 1500 reports of the nodes: valid, read by dcmqi and highdicom, equal to the measurements."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.seg_writer import nodes_seg, seg_bytes
from pipeline.dicom.sr import MEASUREMENT_KEYS, nodes_sr, read_measurements, sr_bytes
from pipeline.dicom.sr_rows import (
    QUANTITATIVE_MEASUREMENTS_SCHEMA,
    quantitative_measurement_rows,
    quantitative_measurements_table,
)
from pipeline.dicom.volume import CtVolume
from pipeline.errors import SegWriteError
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import NodeMeasurement, measure_labelled

DCIODVFY = shutil.which("dciodvfy")
TID1500READER = Path(sys.executable).with_name("tid1500reader")
SCOORD3D_TOLERANCE_MM = 1e-4
"""SCOORD3D coordinates are float32: about 3e-5 mm at 300 mm from the origin."""


@dataclass
class Written:
    ct: CtVolume
    labels: np.ndarray
    nodes: list[NodeMeasurement]
    seg_path: Path
    sr_path: Path


def _write(ct: CtVolume, labels: np.ndarray, out: Path, *, source: str = "prediction") -> Written:
    nodes = measure_labelled(labels, ct.geometry, hu=ct.hu)
    model = ("tiny-window", "1.2") if source == "prediction" else ("reference", "LNQ2023")
    seg = nodes_seg(labels, ct, nodes, model_name=model[0], model_version=model[1], source=source)
    sr = nodes_sr(seg, nodes, model_name=model[0], model_version=model[1], source=source)
    assert sr is not None
    out.mkdir(parents=True, exist_ok=True)
    (out / "seg.dcm").write_bytes(seg_bytes(seg))
    (out / "sr.dcm").write_bytes(sr_bytes(sr))
    return Written(ct, labels, nodes, out / "seg.dcm", out / "sr.dcm")


@pytest.fixture(scope="module")
def written(phantom, tmp_path_factory: pytest.TempPathFactory) -> Written:  # type: ignore[no-untyped-def]
    """The default phantom's three nodes: one target, one non-target, one normal."""
    ct = decode_ct_series(str(phantom.ct_dir))
    return _write(ct, label_nodes(phantom.mask, ct.geometry), tmp_path_factory.mktemp("sr"))


def dciodvfy_errors(path: Path) -> list[str]:
    if DCIODVFY is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed; make test installs it")
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def dcmqi_json(path: Path, tmp_path: Path) -> dict:
    if not TID1500READER.exists():
        pytest.skip("dcmqi is not installed; make test installs it")
    out = tmp_path / f"{path.stem}.json"
    done = subprocess.run(
        [str(TID1500READER), "--inputDICOM", str(path), "--outputMetadata", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def assert_report_matches(w: Written, tmp_path: Path) -> None:
    """Every acceptance check of one written SEG + SR pair."""
    assert dciodvfy_errors(w.seg_path) == []
    assert dciodvfy_errors(w.sr_path) == []
    seg = pydicom.dcmread(w.seg_path)
    tracking = {int(s.SegmentNumber): (s.TrackingID, s.TrackingUID) for s in seg.SegmentSequence}
    rows = read_measurements(w.sr_path)
    assert len(seg.SegmentSequence) == len(rows) == len(w.nodes) > 0
    for row, node in zip(rows, w.nodes, strict=True):
        assert list(row) == list(MEASUREMENT_KEYS)
        assert (row["tracking_identifier"], row["tracking_uid"]) == tracking[node.node_index]
        assert (row["seg_instance_uid"], row["segment_number"]) == (seg.SOPInstanceUID, node.node_index)
        assert row["source_series_uid"] == seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        for key in ("volume_ml", "long_axis_mm", "short_axis_mm", "max_diameter_3d_mm", "mean_hu"):
            assert row[key] == getattr(node, key), key
        assert row["recist_category"] == node.recist_category
        for key in ("long_axis_endpoints_mm", "short_axis_endpoints_mm"):
            np.testing.assert_allclose(row[key], getattr(node, key), rtol=0, atol=SCOORD3D_TOLERANCE_MM)
    converted = dcmqi_json(w.sr_path, tmp_path)
    volumetric = [g for g in converted["Measurements"] if "ReferencedSegment" in g]
    assert len(volumetric) == len(w.nodes)
    assert len(converted["Measurements"]) == 3 * len(w.nodes)  # plus a planar group per axis
    for group, node in zip(volumetric, w.nodes, strict=True):
        assert group["ReferencedSegment"] == node.node_index
        assert group["segmentationSOPInstanceUID"] == seg.SOPInstanceUID
        assert (group["TrackingIdentifier"], group["TrackingUniqueIdentifier"]) == tracking[node.node_index]
        values = {item["quantity"]["CodeValue"]: float(item["value"]) for item in group["measurementItems"]}
        expected = {
            "118565006": node.volume_ml,
            "103339001": node.long_axis_mm,
            "103340004": node.short_axis_mm,
            "81827009": node.max_diameter_3d_mm,
            "112031": node.mean_hu,
        }
        assert values == pytest.approx(expected, rel=1e-12, abs=1e-12)  # DS keeps 16 characters


def test_report_is_valid_and_equals_the_measurements(written: Written, tmp_path: Path) -> None:
    assert {n.recist_category for n in written.nodes} == {"target", "non_target", "normal"}
    assert_report_matches(written, tmp_path)


def test_highdicom_reads_the_report_back(written: Written) -> None:
    sr = hd.sr.srread(written.sr_path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    report = sr.content
    groups = report.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(written.nodes)
    first = groups[0]
    assert first.finding_type.value == "59441001"
    assert [s.value.value for s in first.finding_sites] == ["72410000"]
    assert first.referenced_segment.referenced_segment_numbers == [1]
    lines = report.get_planar_roi_measurement_groups(tracking_uid=first.tracking_uid)
    assert sorted(g.get_measurements()[0].name.value for g in lines) == ["103339001", "103340004"]
    for line in lines:
        assert line.roi.graphic_type == hd.sr.GraphicTypeValues3D.POLYLINE
        assert line.roi.frame_of_reference_uid == written.ct.frame_of_reference_uid
        points = np.asarray(line.roi.value)
        length = float(np.linalg.norm(points[1] - points[0]))
        assert length == pytest.approx(line.get_measurements()[0].value, abs=SCOORD3D_TOLERANCE_MM)


def test_rows_have_the_shape_of_idc_quantitative_measurements(written: Written) -> None:
    rows = quantitative_measurement_rows(written.sr_path)
    table = quantitative_measurements_table(rows)
    assert table.schema == QUANTITATIVE_MEASUREMENTS_SCHEMA
    segmented = [r for r in rows if r["segmentationInstanceUID"] is not None]
    assert len(segmented) == 5 * len(written.nodes)  # volume, axes, 3D diameter, mean HU
    assert len(rows) == 7 * len(written.nodes)  # and each axis again in its planar group
    by_quantity = {(r["segmentationSegmentNumber"], r["Quantity"]["CodeValue"]): r for r in segmented}
    node = written.nodes[0]
    diameter = by_quantity[(node.node_index, "81827009")]
    assert diameter["Value"] == node.max_diameter_3d_mm
    assert diameter["derivationModifier"]["CodeMeaning"] == "Maximum"
    assert diameter["Units"]["CodeValue"] == "mm"
    assert by_quantity[(node.node_index, "112031")]["Units"]["CodeValue"] == "[hnsf'U]"
    assert diameter["finding"]["CodeValue"] == "59441001"
    assert diameter["findingSite"]["CodeValue"] == "72410000"
    assert diameter["sourceSegmentedSeriesUID"] == written.ct.series_uid
    assert diameter["PatientID"] == written.ct.patient_id
    assert sorted({r["measurementGroup_number"] for r in rows}) == list(range(3 * len(written.nodes)))


def test_reference_mode_report_is_valid(phantom, tmp_path: Path) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    w = _write(ct, label_nodes(phantom.mask, ct.geometry), tmp_path / "ref", source="reference")
    assert_report_matches(w, tmp_path)
    assert "reference" in pydicom.dcmread(w.sr_path).SeriesDescription


def test_rerun_rewrites_the_same_report(written: Written, tmp_path: Path) -> None:
    again = _write(written.ct, written.labels, tmp_path / "again")
    a, b = pydicom.dcmread(written.sr_path), pydicom.dcmread(again.sr_path)
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    assert [r["tracking_uid"] for r in read_measurements(a)] == [
        r["tracking_uid"] for r in read_measurements(b)
    ]


def test_no_node_gives_no_report(written: Written) -> None:
    seg = pydicom.dcmread(written.seg_path)
    assert nodes_sr(seg, [], model_name="tiny-window", model_version="1.2") is None


def test_a_node_without_a_tracked_segment_is_refused(written: Written) -> None:
    seg = pydicom.dcmread(written.seg_path)
    del seg.SegmentSequence[1].TrackingUID
    with pytest.raises(SegWriteError, match="no tracked segment 2 for node 2"):
        nodes_sr(seg, written.nodes, model_name="tiny-window", model_version="1.2")


def test_the_validity_check_itself_sees_errors(written: Written, tmp_path: Path) -> None:
    """Guard against a check that cannot fail: an SR without its completion flag is reported."""
    ds = pydicom.dcmread(written.sr_path)
    del ds.CompletionFlag
    ds.save_as(tmp_path / "broken.dcm")
    assert any("CompletionFlag" in e for e in dciodvfy_errors(tmp_path / "broken.dcm"))


@pytest.mark.parametrize("name", ["lpctdx-A0002-8mm-B40f", "totalseg-example-j2k"])
def test_real_ct_report_is_valid(real_ct: Path, tmp_path: Path, name: str) -> None:
    """Scanner headers (and, for the JPEG 2000 series, empty identifiers): nodes drawn on its grid."""
    ct = decode_ct_series(str(real_ct / name))
    nz, ny, nx = ct.geometry.size_zyx
    z, y, x = np.ogrid[:nz, :ny, :nx]
    labels = np.zeros((nz, ny, nx), dtype=np.uint16)
    sz, sy, sx = ct.geometry.spacing_mm[::-1]
    for index, (cz, cy, cx, r_mm) in enumerate(
        ((nz // 2, ny // 2, nx // 2 - 60, 12.0), (nz // 2, ny // 2 + 50, nx // 2 + 40, 7.0)), 1
    ):
        inside = ((z - cz) * sz / (r_mm * 1.5)) ** 2 + ((y - cy) * sy / r_mm) ** 2 + (
            (x - cx) * sx / (r_mm * 0.7)
        ) ** 2 <= 1
        labels[inside] = index
    w = _write(ct, labels, tmp_path / name)
    assert_report_matches(w, tmp_path)

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

from pipeline.dicom.codes import LONG_AXIS
from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.seg_writer import nodes_seg, seg_bytes, segment_tracking
from pipeline.dicom.sr import MEASUREMENT_KEYS, SHORT_AXIS_LINE, nodes_sr, read_measurements, sr_bytes
from pipeline.dicom.sr_rows import (
    QUANTITATIVE_MEASUREMENTS_SCHEMA,
    quantitative_measurement_rows,
    quantitative_measurements_table,
)
from pipeline.dicom.tracking import line_tracking
from pipeline.errors import SegWriteError
from pipeline.geometry import CtVolume
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import NodeMeasurement, measure_labelled

DCIODVFY = shutil.which("dciodvfy")
TID1500READER = Path(sys.executable).with_name("tid1500reader")
SCOORD3D_TOLERANCE_MM = 1e-4
"""SCOORD3D coordinates are float32: about 3e-5 mm at 300 mm from the origin."""
SCOORD_TOLERANCE_MM = 1e-4
"""SCOORD image coordinates are float32 too: about 3e-5 pixel at column 512."""


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
    sr = nodes_sr(seg, nodes, ct=ct, model_name=model[0], model_version=model[1], source=source)
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
        assert row["quality_flag"] == node.quality_flag.value
        for key in ("long_axis_endpoints_mm", "short_axis_endpoints_mm"):
            np.testing.assert_allclose(row[key], getattr(node, key), rtol=0, atol=SCOORD3D_TOLERANCE_MM)
    assert_axes_drawn_on_the_measurement_slice(w)
    converted = dcmqi_json(w.sr_path, tmp_path)
    volumetric = [g for g in converted["Measurements"] if "ReferencedSegment" in g]
    assert len(volumetric) == len(w.nodes)
    assert len(converted["Measurements"]) == 5 * len(w.nodes)  # plus each axis as a 2D and a 3D line
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


def assert_axes_drawn_on_the_measurement_slice(w: Written) -> None:
    """Each axis is also a 2D line (SCOORD) on the CT instance of its node's measurement slice,
    whose image coordinates land on the axis' end points: the long axis under the node's
    tracking, the short axis under its own (``line_tracking``)."""
    report = hd.sr.srread(w.sr_path).content
    tracking = segment_tracking(pydicom.dcmread(w.seg_path))
    for node in w.nodes:
        node_tracking = tracking[node.node_index]
        for uid, ends_mm, measured in (
            (node_tracking.uid, node.long_axis_endpoints_mm, [LONG_AXIS.value]),
            (line_tracking(node_tracking, SHORT_AXIS_LINE).uid, node.short_axis_endpoints_mm, []),
        ):
            drawn = [
                g
                for g in report.get_planar_roi_measurement_groups(tracking_uid=uid)
                if isinstance(g.roi, hd.sr.ImageRegion)
            ]
            assert len(drawn) == 1, (node.node_index, uid)
            region = drawn[0].roi
            assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
            k = int(np.rint(w.ct.geometry.physical_to_index(np.asarray(ends_mm))[0, 0]))
            assert region.value.shape == (2, 2)
            selected_from = region.ContentSequence[0]
            assert selected_from.RelationshipType == "SELECTED FROM" and selected_from.ValueType == "IMAGE"
            image = selected_from.ReferencedSOPSequence[0]
            assert image.ReferencedSOPInstanceUID == w.ct.sop_instance_uids[k]
            assert image.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
            columns, rows = region.value[:, 0] - 0.5, region.value[:, 1] - 0.5
            back = w.ct.geometry.index_to_physical(np.column_stack([np.full(2, k), rows, columns]))
            np.testing.assert_allclose(back, ends_mm, rtol=0, atol=SCOORD_TOLERANCE_MM)
            assert [m.name.value for m in drawn[0].get_measurements()] == measured


def test_report_is_valid_and_equals_the_measurements(written: Written, tmp_path: Path) -> None:
    assert {n.recist_category for n in written.nodes} == {"target", "non_target", "normal"}
    assert_report_matches(written, tmp_path)


def _ohif_measurements(path: Path) -> list[dict]:
    """The measurements OHIF v3.13.2's SR loader makes of a TID 1500 report (extension
    cornerstone-dicom-sr, ``getSopClassHandlerModule``: ``_getMeasurements``): groups merged by
    tracking UID in document order; a merged group with an SCOORD or SCOORD3D anywhere is drawn
    from the first one only, its text box lists the NUMs (label and value) and the finding site."""
    ds = pydicom.dcmread(path)
    report = next(c for c in ds.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "126010")
    merged: dict[str, list] = {}
    for group in report.ContentSequence:
        uid = next(i.UID for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "112040")
        merged.setdefault(uid, []).extend(group.ContentSequence)
    out = []
    for uid, items in merged.items():
        graphics = [i for i in items if i.ValueType in ("SCOORD", "SCOORD3D")]
        out.append(
            {
                "uid": uid,
                "id": next(i.TextValue for i in items if i.ConceptNameCodeSequence[0].CodeValue == "112039"),
                "graphic": graphics[0] if graphics else None,
                "labels": [i.ConceptNameCodeSequence[0].CodeMeaning for i in items if i.ValueType == "NUM"]
                + [
                    i.ConceptCodeSequence[0].CodeMeaning
                    for i in items
                    if i.ConceptNameCodeSequence[0].CodeValue == "363698007"
                ],
            }
        )
    return out


def test_the_report_reads_in_ohif_as_two_drawn_lines_per_node(written: Written) -> None:
    """OHIF's reading of the report without a browser (the viewer test sees it for real): one
    measurement per node drawn from the long axis' 2D line with the node's values first in its
    text box, one per short axis drawn from its 2D line with nothing to print over them; every
    tracking UID has a line (OHIF's loader fails on one without)."""
    measurements = _ohif_measurements(written.sr_path)
    tracking = segment_tracking(pydicom.dcmread(written.seg_path))
    assert [m["id"] for m in measurements] == [
        name
        for n in written.nodes
        for name in (tracking[n.node_index].identifier, f"Lymph node {n.node_index} short axis")
    ]
    for m in measurements:
        assert m["graphic"] is not None and m["graphic"].ValueType == "SCOORD", m["id"]
        assert m["graphic"].GraphicType == "POLYLINE" and len(m["graphic"].GraphicData) == 4
        assert m["graphic"].ContentSequence[0].RelationshipType == "SELECTED FROM"
    nodes, lines = measurements[0::2], measurements[1::2]
    for node, m in zip(written.nodes, nodes, strict=True):
        assert m["uid"] == tracking[node.node_index].uid
        assert m["labels"][:5] == ["Volume", "Long Axis", "Short Axis", "Diameter", "Attenuation Coefficient"]
    assert all(m["labels"] == [] for m in lines)


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
    in_space = [g for g in lines if isinstance(g.roi, hd.sr.ImageRegion3D)]
    on_image = [g for g in lines if isinstance(g.roi, hd.sr.ImageRegion)]
    assert sorted(g.get_measurements()[0].name.value for g in in_space) == ["103339001", "103340004"]
    assert [g.get_measurements()[0].name.value for g in on_image] == ["103339001"]  # the long axis
    for line in in_space:
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
    assert len(rows) == 8 * len(written.nodes)  # and the long axis' 2D line, both axes' 3D lines
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
    groups = {r["measurementGroup_number"] for r in rows}  # the short axis' 2D line has no number
    assert groups == set(range(5 * len(written.nodes))) - {5 * i + 2 for i in range(len(written.nodes))}


def test_flagged_nodes_carry_their_quality_flag(written: Written, tmp_path: Path) -> None:
    """A node flagged speck or implausible (nodes.quality_flag) says so in its volumetric group, in a
    local code; the report stays valid and reads back every node, flags included."""
    import dataclasses

    from pipeline.measure.quality import NodeQuality

    flags = [NodeQuality.IMPLAUSIBLE, NodeQuality.OK, NodeQuality.SPECK]
    nodes = [dataclasses.replace(n, quality_flag=f) for n, f in zip(written.nodes, flags, strict=True)]
    seg = nodes_seg(
        written.labels, written.ct, nodes, model_name="tiny-window", model_version="1.2", source="prediction"
    )
    sr = nodes_sr(
        seg, nodes, ct=written.ct, model_name="tiny-window", model_version="1.2", source="prediction"
    )
    assert sr is not None
    (tmp_path / "seg.dcm").write_bytes(seg_bytes(seg))
    (tmp_path / "sr.dcm").write_bytes(sr_bytes(sr))
    flagged = Written(written.ct, written.labels, nodes, tmp_path / "seg.dcm", tmp_path / "sr.dcm")
    assert [r["quality_flag"] for r in read_measurements(flagged.sr_path)] == ["implausible", "ok", "speck"]
    assert_report_matches(flagged, tmp_path)


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
    assert nodes_sr(seg, [], ct=written.ct, model_name="tiny-window", model_version="1.2") is None


def test_a_node_without_a_tracked_segment_is_refused(written: Written) -> None:
    seg = pydicom.dcmread(written.seg_path)
    del seg.SegmentSequence[1].TrackingUID
    with pytest.raises(SegWriteError, match="no tracked segment 2 for node 2"):
        nodes_sr(seg, written.nodes, ct=written.ct, model_name="tiny-window", model_version="1.2")


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

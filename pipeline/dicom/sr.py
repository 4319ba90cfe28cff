"""Node measurements as a TID 1500 Measurement Report in a Comprehensive 3D SR, and back.

Per node (codes in ``codes.py``), three measurement groups share the node's tracking
identifier and tracking UID, which are those of its segment in the node SEG:

- a volumetric group (TID 1411) referencing the node's segment (SEG instance and segment
  number, source series = the CT), finding Lymph node, finding site Mediastinum, with the
  volume (mL), long and short axis (mm), maximum 3D diameter (mm), mean HU and the RECIST
  category as a qualitative evaluation (Baseline Category);
- two planar groups (TID 1410), one per RECIST axis, whose region is a SCOORD3D POLYLINE of
  the axis' two end points (patient LPS mm, on the measurement slice) and whose one
  measurement is that axis' length, so that viewers draw the lines.

Why separate planar groups: TID 1419 (the measurements of TID 1410 and 1411) gives a
measurement no coordinates of its own; the group's region is its geometry, so a line needs
a planar group. highdicom refuses coordinates inside ROI measurements for this reason, and
reads planar and volumetric groups back apart (``get_planar_roi_measurement_groups``).
There is one volumetric group per node: ``len(volumetric groups) == len(nodes) ==
len(SEG segments)``.

TID 1500 needs at least one measurement group, so a series without nodes has no SR
(:func:`nodes_sr` returns None). UIDs are derived from the CT series, the model and the
node source, so a rerun rewrites the same object.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
import pydicom

import pipeline
from pipeline.dicom.codes import (
    ANATOMICAL_STRUCTURE,
    ATTENUATION_COEFFICIENT,
    BASELINE_CATEGORY,
    CT_PROCEDURE,
    DIAMETER,
    HOUNSFIELD_UNIT,
    LONG_AXIS,
    LYMPH_NODE,
    MAXIMUM,
    MEAN,
    MEDIASTINUM,
    MILLILITRE,
    MILLIMETRE,
    RECIST_1_1,
    RECIST_CATEGORY_CODES,
    SHORT_AXIS,
    SUM_OF_VOXEL_VOLUMES,
    VOLUME,
)
from pipeline.dicom.seg_writer import segment_tracking
from pipeline.dicom.tracking import NodeTracking, derived_uid, object_uids
from pipeline.enums import NodeSource
from pipeline.errors import SegWriteError
from pipeline.measure.categories import RecistCategory
from pipeline.measure.nodes import NodeMeasurement

SR_SERIES_NUMBER = 3100
MEASUREMENT_KEYS = (
    "tracking_identifier",
    "tracking_uid",
    "seg_instance_uid",
    "segment_number",
    "source_series_uid",
    "volume_ml",
    "long_axis_mm",
    "short_axis_mm",
    "max_diameter_3d_mm",
    "mean_hu",
    "recist_category",
    "long_axis_endpoints_mm",
    "short_axis_endpoints_mm",
)
"""Keys of each :func:`read_measurements` row, in order."""

MEASUREMENT_ALGORITHM_NAME = "lnq-pipeline measure"
"""Who measured (TID 4019 in each volumetric group); the segmentation's own algorithm is in the SEG."""

_CATEGORY_BY_CODE = {code.value: category for category, code in RECIST_CATEGORY_CODES.items()}


def nodes_sr(
    seg: pydicom.Dataset,
    nodes: Sequence[NodeMeasurement],
    *,
    model_name: str,
    model_version: str,
    source: NodeSource | str = NodeSource.PREDICTION,
) -> hd.sr.Comprehensive3DSR | None:
    """The measurement report of ``nodes``, whose segments (numbered ``node_index``) are in ``seg``.

    None when there is no node: TID 1500 holds at least one measurement group.
    """
    source = NodeSource(source)
    label = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    if not nodes:
        return None
    try:
        tracked = segment_tracking(seg)
        groups = [group for node in nodes for group in _node_groups(seg, tracked, node)]
        observer = hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=derived_uid("device", "lnq-pipeline", pipeline.__version__),
                name="lnq-pipeline",
                manufacturer_name="LNQ pipeline",
                model_name=f"lnq-pipeline {pipeline.__version__}",
            ),
        )
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=CT_PROCEDURE,
            imaging_measurements=groups,
        )
        series_uid, instance_uid = object_uids(
            "sr", label, model_name=model_name, model_version=model_version, source=source
        )
        return hd.sr.Comprehensive3DSR(
            evidence=[seg],
            content=report,
            series_instance_uid=series_uid,
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=instance_uid,
            instance_number=1,
            manufacturer="LNQ pipeline",
            is_complete=True,
            series_description=f"{model_name} lymph node measurements"[:64],
        )
    except SegWriteError:
        raise
    except Exception as exc:
        raise SegWriteError(f"the SR cannot be built: {type(exc).__name__}: {exc}", series_uid=label) from exc


def sr_bytes(sr: hd.sr.Comprehensive3DSR) -> bytes:
    buffer = io.BytesIO()
    sr.save_as(buffer)
    return buffer.getvalue()


def _node_groups(seg: pydicom.Dataset, tracked: dict[int, NodeTracking], node: NodeMeasurement) -> list[Any]:
    """The volumetric group of ``node`` and its two planar axis groups."""
    tracking = tracked.get(node.node_index)
    if tracking is None:
        raise SegWriteError(
            f"the SEG has no tracked segment {node.node_index} for node {node.node_index}",
            series_uid=str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
        )
    tracking_id, tracking_uid = tracking.identifier, tracking.uid
    site = [hd.sr.FindingSite(MEDIASTINUM)]
    axes = [
        hd.sr.Measurement(LONG_AXIS, float(node.long_axis_mm), MILLIMETRE),
        hd.sr.Measurement(SHORT_AXIS, float(node.short_axis_mm), MILLIMETRE),
    ]
    measurements = [
        hd.sr.Measurement(VOLUME, float(node.volume_ml), MILLILITRE, method=SUM_OF_VOXEL_VOLUMES),
        *(hd.sr.Measurement(axis.name, axis.value, axis.unit, method=RECIST_1_1) for axis in axes),
        hd.sr.Measurement(DIAMETER, float(node.max_diameter_3d_mm), MILLIMETRE, derivation=MAXIMUM),
    ]
    if node.mean_hu is not None:
        measurements.append(
            hd.sr.Measurement(ATTENUATION_COEFFICIENT, float(node.mean_hu), HOUNSFIELD_UNIT, derivation=MEAN)
        )
    volumetric = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=tracking_id),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=node.node_index,
            source_series=hd.sr.SourceSeriesForSegmentation(
                str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
            ),
        ),
        finding_type=LYMPH_NODE,
        finding_category=ANATOMICAL_STRUCTURE,
        finding_sites=site,
        algorithm_id=hd.sr.AlgorithmIdentification(MEASUREMENT_ALGORITHM_NAME, pipeline.__version__),
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                BASELINE_CATEGORY, RECIST_CATEGORY_CODES[RecistCategory(node.recist_category)]
            )
        ],
    )
    planar = [
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=tracking_id),
            referenced_region=hd.sr.ImageRegion3D(
                graphic_type=hd.sr.GraphicTypeValues3D.POLYLINE,
                graphic_data=np.asarray(ends, dtype=float),
                frame_of_reference_uid=str(seg.FrameOfReferenceUID),
            ),
            finding_type=LYMPH_NODE,
            finding_sites=site,
            method=RECIST_1_1,
            measurements=[axis],
        )
        for axis, ends in zip(axes, (node.long_axis_endpoints_mm, node.short_axis_endpoints_mm), strict=True)
    ]
    return [volumetric, *planar]


def read_sr(path_or_dataset: str | os.PathLike[str] | pydicom.Dataset) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR from a path or a dataset, as highdicom reads it."""
    if isinstance(path_or_dataset, pydicom.Dataset):
        return hd.sr.Comprehensive3DSR.from_dataset(path_or_dataset)
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path_or_dataset))


def read_measurements(path_or_dataset: str | os.PathLike[str] | pydicom.Dataset) -> list[dict[str, Any]]:
    """One dict per node (keys :data:`MEASUREMENT_KEYS`), in report order, from an SR we wrote."""
    report = read_sr(path_or_dataset).content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise ValueError(f"the SR's content is {type(report).__name__}, not a TID 1500 Measurement Report")
    lines = _axis_lines(report)
    rows = []
    for group in report.get_volumetric_roi_measurement_groups():
        uid = str(group.tracking_uid)
        rows.append(
            {
                "tracking_identifier": group.tracking_identifier,
                "tracking_uid": uid,
                **_segment_reference(group.referenced_segment),
                "volume_ml": _value(group, VOLUME),
                "long_axis_mm": _value(group, LONG_AXIS),
                "short_axis_mm": _value(group, SHORT_AXIS),
                "max_diameter_3d_mm": _value(group, DIAMETER),
                "mean_hu": _value(group, ATTENUATION_COEFFICIENT),
                "recist_category": _category(group),
                "long_axis_endpoints_mm": lines.get((uid, LONG_AXIS.value)),
                "short_axis_endpoints_mm": lines.get((uid, SHORT_AXIS.value)),
            }
        )
    return rows


def _axis_lines(report: hd.sr.MeasurementReport) -> dict[tuple[str, str], tuple[tuple[float, ...], ...]]:
    """(tracking UID, measurement code) -> the polyline's points, from the planar groups."""
    lines = {}
    for planar in report.get_planar_roi_measurement_groups():
        roi = planar.roi
        if not isinstance(roi, hd.sr.ImageRegion3D):
            continue
        points = tuple(tuple(float(v) for v in point) for point in np.asarray(roi.value))
        for measurement in planar.get_measurements():
            lines[(str(planar.tracking_uid), measurement.name.value)] = points
    return lines


def _segment_reference(segment: hd.sr.ReferencedSegment | None) -> dict[str, Any]:
    if segment is None:
        return {"seg_instance_uid": None, "segment_number": None, "source_series_uid": None}
    numbers = segment.referenced_segment_numbers or []
    series = segment.source_series_for_segmentation
    return {
        "seg_instance_uid": str(segment.referenced_sop_instance_uid),
        "segment_number": int(numbers[0]) if numbers else None,
        "source_series_uid": str(series.value) if series is not None else None,
    }


def _category(group: Any) -> str | None:
    found = group.get_qualitative_evaluations(name=BASELINE_CATEGORY)
    if not found:
        return None
    code: hd.sr.CodedConcept = found[0][0].value
    category = _CATEGORY_BY_CODE.get(code.value)
    return category.value if category is not None else None


def _value(group: Any, name: hd.sr.CodedConcept) -> float | None:
    found = group.get_measurements(name=name)
    return float(found[0].value) if found else None

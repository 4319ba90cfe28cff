"""Node measurements as a TID 1500 Measurement Report in a Comprehensive 3D SR, and back.

Per node (codes in ``codes.py``), five measurement groups, in this order:

1. volumetric (TID 1411), tracked as the node: its segment in the node SEG (SEG instance and
   segment number, source series = the CT), finding Lymph node, finding site Mediastinum, the
   volume (mL), long and short axis (mm), maximum 3D diameter (mm), mean HU, and the node's
   coded findings (:func:`node_evaluations`: the RECIST category as Baseline Category);
2. the long axis as a 2D line (TID 1410), tracked as the node: an ``SCOORD`` POLYLINE in image
   coordinates ``SELECTED FROM`` the CT instance of the measurement slice, with its length;
3. the short axis as a 2D line (TID 1410), tracked apart ("Lymph node 1 short axis", see
   :func:`~pipeline.dicom.tracking.line_tracking`): the ``SCOORD`` alone;
4. and 5. the long and the short axis in patient space (TID 1410), tracked as the node: an
   ``SCOORD3D`` POLYLINE (LPS mm, the CT's frame of reference), each with its length.

"Tracked as the node" means the tracking identifier and UID of the node's segment in the SEG,
which the ``nodes`` table carries too (``tracking_uid``): SEG, SR and Parquet join on it.

Why this shape (checked in OHIF v3.13.2, the viewer of IDC's portal; ``docs/viewing.md``):
OHIF draws an SR on its stack viewport only from 2D ``SCOORD`` with an image reference (it
hides ``SCOORD3D`` there); it merges every group sharing a tracking UID into one measurement
and draws only its first line, printing all its numbers beside it (the first five); a tracking
UID with no line at all crashes its loader. So the node's UID carries the long axis' 2D line
first (drawn, with the node's values beside it), the short axis' 2D line needs a UID of its own,
and that group has no number or finding site, which OHIF would print over the node's values.
The ``SCOORD3D`` lines stay for readers that want patient coordinates without the CT's
geometry (highdicom, :func:`read_measurements`); OHIF ignores them, being second under the UID.

Why planar groups for lines: TID 1419 (the measurements of TID 1410 and 1411) gives a
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
    MEASUREMENT_QUALITY,
    MEDIASTINUM,
    MILLILITRE,
    MILLIMETRE,
    QUALITY_CODES,
    RECIST_1_1,
    RECIST_CATEGORY_CODES,
    SHORT_AXIS,
    SUM_OF_VOXEL_VOLUMES,
    VOLUME,
)
from pipeline.dicom.seg_writer import segment_tracking
from pipeline.dicom.sr_lines import ImageLine, ImageRef, ct_images, image_line
from pipeline.dicom.tracking import NodeTracking, derived_uid, line_tracking, object_uids
from pipeline.enums import NodeSource
from pipeline.errors import SegWriteError
from pipeline.geometry import CtVolume, Geometry
from pipeline.measure.categories import RecistCategory
from pipeline.measure.nodes import NodeMeasurement
from pipeline.measure.quality import NodeQuality

SR_SERIES_NUMBER = 3100
SHORT_AXIS_LINE = "short axis"
"""The name in the tracking identifier of a short axis' 2D line (see :func:`line_tracking`)."""
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
    "quality_flag",
    "long_axis_endpoints_mm",
    "short_axis_endpoints_mm",
)
"""Keys of each :func:`read_measurements` row, in order."""

MEASUREMENT_ALGORITHM_NAME = "lnq-pipeline measure"
"""Who measured (TID 4019 in each volumetric group); the segmentation's own algorithm is in the SEG."""

_CATEGORY_BY_CODE = {code.value: category for category, code in RECIST_CATEGORY_CODES.items()}
_QUALITY_BY_CODE = {code.value: flag for flag, code in QUALITY_CODES.items()}


def nodes_sr(
    seg: pydicom.Dataset,
    nodes: Sequence[NodeMeasurement],
    *,
    ct: CtVolume,
    model_name: str,
    model_version: str,
    source: NodeSource | str = NodeSource.PREDICTION,
) -> hd.sr.Comprehensive3DSR | None:
    """The measurement report of ``nodes``, whose segments (numbered ``node_index``) are in ``seg``,
    measured on ``ct`` (its grid and instances place the axes' 2D lines).

    None when there is no node: TID 1500 holds at least one measurement group.
    """
    source = NodeSource(source)
    label = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    if not nodes:
        return None
    try:
        tracked = segment_tracking(seg)
        images = ct_images(seg, ct.sop_instance_uids)
        groups = [
            group
            for node in nodes
            for group in _node_groups(seg, tracked, node, geometry=ct.geometry, images=images)
        ]
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
            evidence=[seg, *_image_evidence(seg, report)],
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


def _image_evidence(seg: pydicom.Dataset, report: hd.sr.MeasurementReport) -> list[pydicom.Dataset]:
    """The CT instances the lines are drawn on, as evidence (same study and series as the SEG's source)."""
    drawn = {
        (str(ref.ReferencedSOPClassUID), str(ref.ReferencedSOPInstanceUID))
        for item in hd.sr.utils.find_content_items(
            report[0], value_type=hd.sr.ValueTypeValues.IMAGE, recursive=True
        )
        for ref in item.ReferencedSOPSequence
        if str(ref.ReferencedSOPInstanceUID) != str(seg.SOPInstanceUID)
    }
    evidence = []
    for sop_class_uid, sop_instance_uid in sorted(drawn):
        ds = pydicom.Dataset()
        ds.StudyInstanceUID = seg.StudyInstanceUID
        ds.SeriesInstanceUID = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        ds.SOPClassUID = sop_class_uid
        ds.SOPInstanceUID = sop_instance_uid
        evidence.append(ds)
    return evidence


def sr_bytes(sr: hd.sr.Comprehensive3DSR) -> bytes:
    buffer = io.BytesIO()
    sr.save_as(buffer)
    return buffer.getvalue()


def _node_groups(
    seg: pydicom.Dataset,
    tracked: dict[int, NodeTracking],
    node: NodeMeasurement,
    *,
    geometry: Geometry,
    images: Sequence[ImageRef],
) -> list[Any]:
    """The volumetric group of ``node``, then its axes as 2D lines, then as 3D lines."""
    series_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    tracking = tracked.get(node.node_index)
    if tracking is None:
        raise SegWriteError(
            f"the SEG has no tracked segment {node.node_index} for node {node.node_index}",
            series_uid=series_uid,
        )
    long_axis = hd.sr.Measurement(LONG_AXIS, float(node.long_axis_mm), MILLIMETRE, method=RECIST_1_1)
    short_axis = hd.sr.Measurement(SHORT_AXIS, float(node.short_axis_mm), MILLIMETRE, method=RECIST_1_1)
    long_line = image_line(node.long_axis_endpoints_mm, geometry, images, series_uid=series_uid)
    short_line = image_line(node.short_axis_endpoints_mm, geometry, images, series_uid=series_uid)
    return [
        _volumetric_group(seg, tracking, node, axes=[long_axis, short_axis]),
        _line_group(tracking, _image_region(long_line), long_axis),
        _line_group(line_tracking(tracking, SHORT_AXIS_LINE), _image_region(short_line), None),
        _line_group(tracking, _region_in_space(node.long_axis_endpoints_mm, seg), long_axis),
        _line_group(tracking, _region_in_space(node.short_axis_endpoints_mm, seg), short_axis),
    ]


def _volumetric_group(
    seg: pydicom.Dataset, tracking: NodeTracking, node: NodeMeasurement, *, axes: list[hd.sr.Measurement]
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411: the node's segment and every value measured on it."""
    measurements = [
        hd.sr.Measurement(VOLUME, float(node.volume_ml), MILLILITRE, method=SUM_OF_VOXEL_VOLUMES),
        *axes,
        hd.sr.Measurement(DIAMETER, float(node.max_diameter_3d_mm), MILLIMETRE, derivation=MAXIMUM),
    ]
    if node.mean_hu is not None:
        measurements.append(
            hd.sr.Measurement(ATTENUATION_COEFFICIENT, float(node.mean_hu), HOUNSFIELD_UNIT, derivation=MEAN)
        )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking.uid, identifier=tracking.identifier),
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
        finding_sites=[hd.sr.FindingSite(MEDIASTINUM)],
        algorithm_id=hd.sr.AlgorithmIdentification(MEASUREMENT_ALGORITHM_NAME, pipeline.__version__),
        measurements=measurements,
        qualitative_evaluations=node_evaluations(node),
    )


def node_evaluations(node: NodeMeasurement) -> list[hd.sr.QualitativeEvaluation]:
    """The node's coded (qualitative) findings, in its volumetric group: the RECIST category, and
    for a node flagged ``speck`` or ``implausible`` (``nodes.quality_flag``) that flag, in a local
    code (:data:`~pipeline.dicom.codes.QUALITY_CODES`).

    Every per-node coded finding goes here (one ``QualitativeEvaluation`` each, concept and
    answer declared in ``codes.py``), so that readers find them beside the node's values.
    """
    evaluations = [
        hd.sr.QualitativeEvaluation(
            BASELINE_CATEGORY, RECIST_CATEGORY_CODES[RecistCategory(node.recist_category)]
        )
    ]
    flag = NodeQuality(node.quality_flag)
    if flag is not NodeQuality.OK:
        evaluations.append(hd.sr.QualitativeEvaluation(MEASUREMENT_QUALITY, QUALITY_CODES[flag]))
    return evaluations


def _line_group(
    tracking: NodeTracking, region: hd.sr.ImageRegion | hd.sr.ImageRegion3D, axis: hd.sr.Measurement | None
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410: one axis' line as the group's region, with the axis' length as the one measurement.

    ``axis`` None: the line alone (the short axis' 2D line, whose length OHIF would print over
    the node's values; see the module docstring), without finding site for the same reason.
    """
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking.uid, identifier=tracking.identifier),
        referenced_region=region,
        finding_type=LYMPH_NODE,
        finding_sites=[hd.sr.FindingSite(MEDIASTINUM)] if axis is not None else None,
        method=RECIST_1_1 if axis is not None else None,
        measurements=[axis] if axis is not None else None,
    )


def _image_region(line: ImageLine) -> hd.sr.ImageRegion:
    """A 2D ``SCOORD`` polyline on the CT image it was measured on."""
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.asarray(line.ends_image, dtype=float),
        source_image=hd.sr.SourceImageForRegion(line.image.sop_class_uid, line.image.sop_instance_uid),
    )


def _region_in_space(ends_mm: Any, seg: pydicom.Dataset) -> hd.sr.ImageRegion3D:
    """A ``SCOORD3D`` polyline in the CT's frame of reference (patient LPS mm)."""
    return hd.sr.ImageRegion3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POLYLINE,
        graphic_data=np.asarray(ends_mm, dtype=float),
        frame_of_reference_uid=str(seg.FrameOfReferenceUID),
    )


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
                "quality_flag": _quality(group),
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


def _quality(group: Any) -> str:
    found = group.get_qualitative_evaluations(name=MEASUREMENT_QUALITY)
    if not found:
        return NodeQuality.OK.value
    flag = _QUALITY_BY_CODE.get(found[0][0].value.value)
    return flag.value if flag is not None else NodeQuality.OK.value


def _value(group: Any, name: hd.sr.CodedConcept) -> float | None:
    found = group.get_measurements(name=name)
    return float(found[0].value) if found else None

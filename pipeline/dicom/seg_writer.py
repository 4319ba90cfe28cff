"""Write node masks as DICOM SEG that Slicer, OHIF and dcmqi open.

Two SEGs, both referencing the source CT series and instances, empty frames omitted:

- :func:`nodes_seg`, one segment per node, numbered as ``nodes.node_index``, labelled
  ``Lymph node <i>``, each with its own tracking identifier and tracking UID (those of
  the node's SR measurement group and Parquet row), property type SCT 59441001 Lymph node,
  category SCT 91723000 Anatomical Structure, anatomic region SCT 72410000 Mediastinum.
  A model's nodes are AUTOMATIC with the model's name and version. The reference nodes
  (``source="reference"``) are the expert's voxels split into 26-connected components by
  this pipeline: SEMIAUTOMATIC (manual input, automatic step) with the algorithm
  ``lnq-pipeline connected components`` of family Morphological Operations and the
  pipeline's version, since an expert drew the voxels but did not separate the nodes.
- :func:`prediction_seg`, the older one-segment union 'Mediastinal lymph node'.

BINARY by default: highdicom, dcmqi's ``segimage2itkimage`` and the project's readers all
read it, and with empty frames omitted it is small (numbers in ``bench/dicom_writing.py``).
A mask with no node still gives a valid SEG: one segment 'Mediastinal lymph node' (no
tracking identifier: there is no node to track) with a single empty frame, so the file
records that the model was run and found nothing.

UIDs are derived from the CT series, the model and the node source (``tracking.py``), so a
rerun writes the same SEG identity and overwrites, never adds, a second object.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import os
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

import pipeline
from pipeline.dicom.codes import ANATOMICAL_STRUCTURE, LYMPH_NODE, MEDIASTINUM
from pipeline.dicom.tracking import NodeTracking, derived_uid, node_label, node_tracking, object_uids
from pipeline.enums import NodeSource
from pipeline.errors import SegWriteError
from pipeline.geometry import CtVolume
from pipeline.measure.nodes import NodeMeasurement

logger = logging.getLogger(__name__)

SEGMENT_LABEL = "Mediastinal lymph node"
MANUFACTURER = "LNQ pipeline"
"""The SEG's Manufacturer. Such a SEG lists every instance of its CT series, in slice order, so
that a reader without the CT knows where the CT ends (``pipeline.evaluate.images``)."""
MAX_NODE_SEGMENTS = 50
"""Nodes that get a segment (and an SR measurement group) of their own: the largest 50. LNQ's
fully annotated cases have at most about 42 nodes; building the SR costs tens of milliseconds
per node, so a noisy model's thousands of specks would take minutes per series."""
SPLIT_ALGORITHM_NAME = "lnq-pipeline connected components"
_NODE_COLOURS_RGB = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)
"""Distinct display colours, cycled by node index, so neighbouring nodes differ in a viewer."""

__all__ = [
    "SEGMENT_LABEL",
    "SPLIT_ALGORITHM_NAME",
    "derived_uid",
    "node_tracking",
    "nodes_seg",
    "prediction_seg",
    "seg_bytes",
    "segment_tracking",
    "source_headers",
]


def nodes_seg(
    labels: np.ndarray,
    ct: CtVolume,
    nodes: Sequence[NodeMeasurement],
    *,
    model_name: str,
    model_version: str,
    source: NodeSource | str = NodeSource.PREDICTION,
    segmentation_type: hd.seg.SegmentationTypeValues | str = hd.seg.SegmentationTypeValues.BINARY,
    headers: Sequence[pydicom.Dataset] | None = None,
    max_node_segments: int = MAX_NODE_SEGMENTS,
) -> hd.seg.Segmentation:
    """A SEG with one segment per node of ``labels`` (``[z, y, x]``, 0 background, 1..N as ``nodes``).

    Nodes are numbered by decreasing size, so the ``max_node_segments`` largest are nodes
    1..max; any smaller ones share one more, untracked segment, so the union of all segments
    is still the whole mask (what ``lnq evaluate`` scores) while a model that predicts
    thousands of specks of noise cannot make the SEG and SR unboundedly large and slow.
    ``headers``: the CT headers from :func:`source_headers`, when the caller already read them.
    """
    source = NodeSource(source)
    _check_labels(labels, ct, nodes)
    files = list(ct.source_files)
    sources = list(headers) if headers is not None else source_headers(files, ct)
    series_key = str(sources[0].SeriesInstanceUID)
    if nodes:
        descriptions = [
            _node_description(n.node_index, series_key, model_name, model_version, source)
            for n in nodes
            if n.node_index <= max_node_segments
        ]
        if len(nodes) > max_node_segments:
            rest = max_node_segments + 1
            logger.warning(
                "series %s: %d %s nodes; the %d largest get their own segment, the other %d share one",
                ct.series_uid,
                len(nodes),
                source.value,
                max_node_segments,
                len(nodes) - max_node_segments,
            )
            descriptions.append(_union_description(rest, model_name, model_version, source))
            labels = np.minimum(labels, rest)
        pixels = np.ascontiguousarray(labels, dtype=np.uint16 if len(descriptions) > 255 else np.uint8)
    else:
        logger.info("series %s: no %s node; writing a SEG of one empty frame", ct.series_uid, source.value)
        descriptions = [_union_description(1, model_name, model_version, source)]
        sources, pixels = sources[:1], np.zeros((1, *labels.shape[1:]), dtype=np.uint8)
    series_uid, instance_uid = object_uids(
        "seg", series_key, model_name=model_name, model_version=model_version, source=source
    )
    return _segmentation(
        sources,
        pixels,
        descriptions,
        ct=ct,
        series_uid=series_uid,
        instance_uid=instance_uid,
        model_name=model_name,
        model_version=model_version,
        segmentation_type=hd.seg.SegmentationTypeValues(segmentation_type),
    )


def segment_tracking(seg: pydicom.Dataset) -> dict[int, NodeTracking]:
    """Segment number -> tracking of every tracked segment of ``seg`` (for the ``nodes`` table)."""
    return {
        int(item.SegmentNumber): NodeTracking(identifier=str(item.TrackingID), uid=str(item.TrackingUID))
        for item in seg.SegmentSequence
        if item.get("TrackingID") and item.get("TrackingUID")
    }


def prediction_seg(
    mask: np.ndarray, ct: CtVolume, *, model_name: str, model_version: str
) -> hd.seg.Segmentation:
    """A one-segment SEG of ``mask`` (``[z, y, x]`` on ``ct``'s grid) referencing the CT's instances."""
    if mask.shape != ct.geometry.size_zyx:
        raise SegWriteError(
            f"mask shape {mask.shape} differs from CT {ct.hu.shape}", series_uid=ct.series_uid
        )
    if not ct.source_files:
        raise SegWriteError("the CT's source files are needed to reference them", series_uid=ct.series_uid)
    files = list(ct.source_files)
    if not mask.any():
        logger.info("series %s: no node predicted; writing a SEG of one empty frame", ct.series_uid)
        files, mask = files[:1], mask[:1]
    key = (ct.series_uid, model_name, model_version)
    return _segmentation(
        source_headers(files, ct),
        np.ascontiguousarray(mask, dtype=np.uint8),
        [_union_description(1, model_name, model_version, NodeSource.PREDICTION)],
        ct=ct,
        series_uid=derived_uid("series", *key),
        instance_uid=derived_uid("instance", *key),
        model_name=model_name,
        model_version=model_version,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
    )


def _check_labels(labels: np.ndarray, ct: CtVolume, nodes: Sequence[NodeMeasurement]) -> None:
    if labels.shape != ct.geometry.size_zyx:
        raise SegWriteError(
            f"labels shape {labels.shape} differs from CT {ct.hu.shape}", series_uid=ct.series_uid
        )
    if not ct.source_files:
        raise SegWriteError("the CT's source files are needed to reference them", series_uid=ct.series_uid)
    indices = [n.node_index for n in nodes]
    present = int(labels.max()) if labels.size else 0
    if sorted(indices) != list(range(1, present + 1)):
        raise SegWriteError(
            f"nodes are numbered {sorted(indices)[:10]}, the labels 1..{present}: they must be the same",
            series_uid=ct.series_uid,
        )


def _algorithm(
    model_name: str, model_version: str, source: NodeSource
) -> tuple[hd.seg.SegmentAlgorithmTypeValues, hd.AlgorithmIdentificationSequence]:
    if source == NodeSource.REFERENCE:
        return hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, hd.AlgorithmIdentificationSequence(
            name=SPLIT_ALGORITHM_NAME,
            version=pipeline.__version__,
            family=codes.cid7162.MorphologicalOperations,
        )
    return hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, hd.AlgorithmIdentificationSequence(
        name=model_name[:64], version=model_version[:64], family=codes.cid7162.ArtificialIntelligence
    )


def _node_description(
    node_index: int, series_key: str, model_name: str, model_version: str, source: NodeSource
) -> hd.seg.SegmentDescription:
    algorithm_type, algorithm = _algorithm(model_name, model_version, source)
    tracking = node_tracking(
        series_key, model_name=model_name, model_version=model_version, source=source, node_index=node_index
    )
    return hd.seg.SegmentDescription(
        segment_number=node_index,
        segment_label=node_label(node_index),
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=LYMPH_NODE,
        algorithm_type=algorithm_type,
        algorithm_identification=algorithm,
        tracking_id=tracking.identifier,
        tracking_uid=tracking.uid,
        anatomic_regions=[MEDIASTINUM],
        display_color=hd.color.CIELabColor.from_rgb(
            *_NODE_COLOURS_RGB[(node_index - 1) % len(_NODE_COLOURS_RGB)]
        ),
    )


def _union_description(
    number: int, model_name: str, model_version: str, source: NodeSource
) -> hd.seg.SegmentDescription:
    algorithm_type, algorithm = _algorithm(model_name, model_version, source)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=LYMPH_NODE,
        algorithm_type=algorithm_type,
        algorithm_identification=algorithm,
    )


def _segmentation(
    sources: list[pydicom.Dataset],
    pixels: np.ndarray,
    descriptions: list[hd.seg.SegmentDescription],
    *,
    ct: CtVolume,
    series_uid: str,
    instance_uid: str,
    model_name: str,
    model_version: str,
    segmentation_type: hd.seg.SegmentationTypeValues,
) -> hd.seg.Segmentation:
    for ds in sources:
        _complete_from_geometry(ds, ct)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=segmentation_type,
            segment_descriptions=descriptions,
            series_instance_uid=series_uid,
            series_number=3000,
            sop_instance_uid=instance_uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=model_name[:64],
            software_versions=f"lnq-pipeline {pipeline.__version__}",
            device_serial_number="0",
            series_description=f"{model_name} lymph nodes"[:64],
            content_label="LYMPHNODES",
            content_description=f"{model_name} {model_version}"[:64],
            content_creator_name="LNQ^Pipeline",
            content_date=dt.date.today(),
            content_time=dt.datetime.now().time().replace(microsecond=0),
            omit_empty_frames=True,
        )
    except Exception as exc:
        raise SegWriteError(
            f"the SEG cannot be built: {type(exc).__name__}: {exc}", series_uid=ct.series_uid
        ) from exc
    _fix_dimension_organization(seg, derived_uid("dimension-organization", instance_uid))
    return seg


def _fix_dimension_organization(seg: hd.seg.Segmentation, uid: str) -> None:
    """highdicom names the dimension organization with a random UID; a rerun must write the same
    SEG, so it is derived from the SEG's own (derived) instance UID instead."""
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = uid
    for item in seg.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = uid


def source_headers(files: list[str], ct: CtVolume) -> list[pydicom.Dataset]:
    """CT headers (no pixels) to reference; anonymised files with empty UIDs get stand-ins (logged).

    The decoder's headers are used where it kept them for these files (a volume decoded in this
    process); otherwise the files are read again.
    """
    kept = dict(zip(ct.source_files, ct.headers, strict=False))
    headers: list[pydicom.Dataset] = [
        kept[path] if path in kept else pydicom.dcmread(path, stop_before_pixels=True) for path in files
    ]
    first_sop = str(
        headers[0].get("SOPInstanceUID") or headers[0].file_meta.get("MediaStorageSOPInstanceUID", "")
    )
    stand_ins = {
        "StudyInstanceUID": ct.study_uid or derived_uid("study-of", first_sop),
        "SeriesInstanceUID": ct.series_uid or derived_uid("series-of", first_sop),
    }
    for ds in headers:
        for keyword in ("ReferencedStudySequence", "ReferencedPatientSequence"):
            if keyword in ds:  # copied into the SEG: keep only complete references (both UIDs)
                items = [
                    i
                    for i in ds[keyword].value
                    if i.get("ReferencedSOPClassUID") and i.get("ReferencedSOPInstanceUID")
                ]
                if items:
                    ds[keyword].value = items
                else:
                    del ds[keyword]
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty means the default repertoire; highdicom wants it absent
        if not ds.get("SOPClassUID"):
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        if not ds.get("SOPInstanceUID"):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        for keyword, value in stand_ins.items():
            if not ds.get(keyword):
                setattr(ds, keyword, value)
    missing = [
        k for k, v in (("StudyInstanceUID", ct.study_uid), ("SeriesInstanceUID", ct.series_uid)) if not v
    ]
    if missing:
        logger.warning(
            "CT from %s has empty %s; the SEG references derived stand-in UIDs",
            os.path.dirname(files[0]),
            missing,
        )
    return headers


COPIED_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
"""Type 2 attributes of the CT's Patient and General Study modules that highdicom copies into the
SEG (and from there into the SR) by reading them: a CT may leave them out, though the standard
says present, empty when unknown. Absent, they are added empty: the SEG's own are Type 2 too."""


LOSSY_FLAGS = ("00", "01")
"""The values of ``LossyImageCompression``, which highdicom copies into the SEG, where it is Type 1."""


def _complete_from_geometry(ds: pydicom.Dataset, ct: CtVolume) -> None:
    """Give ``ds`` what the SEG writer reads from it and an archive may leave out or empty.

    Type 2 attributes copied as they are (:data:`COPIED_TYPE_2`) are added empty; the slice
    thickness (Type 2, which highdicom copies into the SEG's pixel measures, where a volume
    needs it) is taken from the decoded geometry, the slice spacing, when it is absent, empty
    or not one positive number; an empty or garbled ``LossyImageCompression`` (Type 3, copied into
    a Type 1 of the SEG) is left out, as highdicom reads an absent one. Everything else the writer
    needs (position, orientation, pixel spacing, size, UIDs) is Type 1 and checked when the CT is
    decoded."""
    for keyword in COPIED_TYPE_2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    if _positive_number(ds, "SliceThickness") is None:
        ds.SliceThickness = pydicom.valuerep.DSfloat(float(ct.geometry.spacing_mm[2]), auto_format=True)
    if "LossyImageCompression" in ds and ds.get("LossyImageCompression") not in LOSSY_FLAGS:
        del ds.LossyImageCompression  # empty or garbled (Type 3): highdicom takes absent as '00'


def _positive_number(ds: pydicom.Dataset, keyword: str) -> float | None:
    """The one positive, finite number ``keyword`` holds, or None (absent, empty, garbled)."""
    try:
        value = ds.get(keyword)
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):  # several values, or not a number
        return None
    return number if number is not None and math.isfinite(number) and number > 0 else None


def seg_bytes(seg: hd.seg.Segmentation) -> bytes:
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()

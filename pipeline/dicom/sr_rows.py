"""Flatten a TID 1500 SR into rows shaped like IDC's ``quantitative_measurements`` view.

IDC's BigQuery view (``bigquery-public-data.idc_current.quantitative_measurements``) has one
row per numeric measurement (NUM content item) of every measurement group of every TID 1500
SR. These rows are what that view would hold for our SRs, so a ``measurements`` table loaded
from them joins with IDC's own (by ``trackingUniqueIdentifier``, ``sourceSegmentedSeriesUID``,
``segmentationInstanceUID``). Mapping, per NUM item of a measurement group:

=========================== ==================================================================
column                      DICOM source
=========================== ==================================================================
PatientID                   PatientID of the SR
SOPInstanceUID              SOPInstanceUID of the SR
measurementGroup_number     position of the group among the report's measurement groups
                            (CONTAINER DCM 125007 under DCM 126010), from 0 as in IDC
segmentationInstanceUID     Referenced Segment (DCM 121191, IMAGE): ReferencedSOPInstanceUID
segmentationSegmentNumber   Referenced Segment: ReferencedSegmentNumber
sourceSegmentedSeriesUID    Source series for segmentation (DCM 121232, UIDREF)
trackingIdentifier          Tracking Identifier (DCM 112039, TEXT)
trackingUniqueIdentifier    Tracking Unique Identifier (DCM 112040, UIDREF)
Quantity                    the NUM item's concept name
Value                       its FloatingPointValue, else NumericValue (float64; NUMERIC in IDC)
Units                       its MeasurementUnitsCodeSequence
derivationModifier          its child CODE Derivation (DCM 121401), else null
finding                     the group's Finding (DCM 121071, CODE)
findingSite                 the group's Finding Site (SCT 363698007, CODE)
=========================== ==================================================================

Code columns are structs of CodeValue, CodingSchemeDesignator, CodeMeaning (IDC's also carry
CodingSchemeVersion; IDC's view adds SeriesDescription and lateralityModifier, not kept here).
Our planar groups (the axes as lines) have no referenced segment: their rows (the long axis
again for its 2D line, both axes again for their 3D lines; the short axis' 2D line has no
number, see ``sr.py``) have null segmentation columns; ``segmentationInstanceUID IS NOT NULL``
keeps one row per quantity. Every row of a node but the short axis' 2D line carries the node's
``trackingUniqueIdentifier``, the ``nodes`` table's ``tracking_uid``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pydicom

from pipeline.outputs.schemas import MEASUREMENTS_SCHEMA

QUANTITATIVE_MEASUREMENTS_SCHEMA = MEASUREMENTS_SCHEMA
"""Columns of the ``measurements`` table: IDC's ``quantitative_measurements`` shape (declared with
the other tables in ``pipeline/outputs/schemas.py``)."""

_MEASUREMENT_GROUP = ("125007", "DCM")
_IMAGING_MEASUREMENTS = ("126010", "DCM")
_REFERENCED_SEGMENT = ("121191", "DCM")
_SOURCE_SERIES = ("121232", "DCM")
_TRACKING_ID = ("112039", "DCM")
_TRACKING_UID = ("112040", "DCM")
_FINDING = ("121071", "DCM")
_FINDING_SITE = ("363698007", "SCT")
_DERIVATION = ("121401", "DCM")


def quantitative_measurement_rows(
    path_or_dataset: str | os.PathLike[str] | pydicom.Dataset,
) -> list[dict[str, Any]]:
    """Rows (keys: the schema's names) of every NUM item of every measurement group."""
    ds = path_or_dataset if isinstance(path_or_dataset, pydicom.Dataset) else pydicom.dcmread(path_or_dataset)
    rows = []
    for number, group in enumerate(_measurement_groups(ds)):
        context = _group_context(group)
        for item in group.get("ContentSequence", []):
            if item.ValueType != "NUM" or "MeasuredValueSequence" not in item:
                continue
            measured = item.MeasuredValueSequence[0] if item.MeasuredValueSequence else None
            derivation = next((c for c in item.get("ContentSequence", []) if _name(c) == _DERIVATION), None)
            row = {
                "PatientID": str(ds.get("PatientID", "")) or None,
                "SOPInstanceUID": str(ds.SOPInstanceUID),
                "measurementGroup_number": number,
                **context,
                "Quantity": _code(item.ConceptNameCodeSequence[0]),
                "Value": _numeric(measured),
                "Units": _code(measured.MeasurementUnitsCodeSequence[0]) if measured else None,
                "derivationModifier": _code(derivation.ConceptCodeSequence[0]) if derivation else None,
            }
            rows.append({name: row.get(name) for name in QUANTITATIVE_MEASUREMENTS_SCHEMA.names})
    return rows


def quantitative_measurements_table(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as an Arrow table with :data:`QUANTITATIVE_MEASUREMENTS_SCHEMA`."""
    return pa.Table.from_pylist(rows, schema=QUANTITATIVE_MEASUREMENTS_SCHEMA)


def _measurement_groups(ds: pydicom.Dataset) -> Iterator[pydicom.Dataset]:
    for container in ds.get("ContentSequence", []):
        if _name(container) != _IMAGING_MEASUREMENTS:
            continue
        for item in container.get("ContentSequence", []):
            if item.ValueType == "CONTAINER" and _name(item) == _MEASUREMENT_GROUP:
                yield item


def _group_context(group: pydicom.Dataset) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for item in group.get("ContentSequence", []):
        name = _name(item)
        if name == _REFERENCED_SEGMENT and "ReferencedSOPSequence" in item:
            ref = item.ReferencedSOPSequence[0]
            context["segmentationInstanceUID"] = str(ref.ReferencedSOPInstanceUID)
            if "ReferencedSegmentNumber" in ref:
                context["segmentationSegmentNumber"] = int(ref.ReferencedSegmentNumber)
        elif name == _SOURCE_SERIES:
            context["sourceSegmentedSeriesUID"] = str(item.UID)
        elif name == _TRACKING_ID:
            context["trackingIdentifier"] = str(item.TextValue)
        elif name == _TRACKING_UID:
            context["trackingUniqueIdentifier"] = str(item.UID)
        elif name == _FINDING and item.ValueType == "CODE":
            context["finding"] = _code(item.ConceptCodeSequence[0])
        elif name == _FINDING_SITE and item.ValueType == "CODE":
            context["findingSite"] = _code(item.ConceptCodeSequence[0])
    return context


def _name(item: pydicom.Dataset) -> tuple[str, str] | None:
    names = item.get("ConceptNameCodeSequence")
    if not names:
        return None
    return (str(names[0].CodeValue), str(names[0].CodingSchemeDesignator))


def _code(item: pydicom.Dataset) -> dict[str, str]:
    return {
        "CodeValue": str(item.CodeValue),
        "CodingSchemeDesignator": str(item.CodingSchemeDesignator),
        "CodeMeaning": str(item.CodeMeaning),
    }


def _numeric(measured: pydicom.Dataset | None) -> float | None:
    if measured is None:
        return None
    if "FloatingPointValue" in measured:
        return float(measured.FloatingPointValue)
    return float(measured.NumericValue)

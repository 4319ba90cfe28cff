"""The Parquet tables' schemas, declared once.

Types are the ones BigQuery loads without conversion: string, int64, float64,
timestamp (microseconds, UTC). Nullable unless marked otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from pipeline.enums import TIMED_STAGES, NodeSource, Stage

TIMESTAMP = pa.timestamp("us", tz="UTC")
AXIS_ENDS = ("start", "end")
"""The two end points of a RECIST axis, in the order ``NodeMeasurement.*_axis_endpoints_mm`` holds them."""

COHORT_SCHEMA = pa.schema(
    [
        pa.field("patient_id", pa.string()),
        pa.field("study_instance_uid", pa.string()),
        pa.field("ct_series_instance_uid", pa.string(), nullable=False),
        pa.field("ct_series_url", pa.string()),
        pa.field("seg_series_instance_uid", pa.string()),
        pa.field("seg_series_url", pa.string()),
        pa.field("annotation", pa.string()),
        pa.field("ct_instance_count", pa.int64()),
        pa.field("ct_size_mb", pa.float64()),
    ]
)


BURDEN_COLUMNS: dict[str, tuple[str, pa.DataType]] = {
    "n_nodes": ("n_{source}_nodes", pa.int64()),
    "n_nodes_short_axis_ge_10mm": ("n_{source}_nodes_short_axis_ge_10mm", pa.int64()),
    "total_volume_ml": ("{source}_volume_ml", pa.float64()),
    "sum_short_axis_pathological_mm": ("{source}_sum_short_axis_pathological_mm", pa.float64()),
    "spd_mm2": ("{source}_spd_mm2", pa.float64()),
}
"""Series columns of a source's node burden: ``pipeline.measure.burden.Burden`` field -> (column, type)."""


def burden_column(field_name: str, source: NodeSource) -> str:
    return BURDEN_COLUMNS[field_name][0].format(source=source.value)


def stage_column(stage: Stage) -> str:
    """The ``series`` column holding the seconds spent in ``stage``."""
    return f"{stage.value}_s"


def _burden_fields(source: NodeSource) -> list[pa.Field]:
    return [pa.field(burden_column(name, source), kind) for name, (_, kind) in BURDEN_COLUMNS.items()]


SERIES_SCHEMA = pa.schema(
    [
        pa.field("ct_series_instance_uid", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),
        pa.field("study_instance_uid", pa.string()),
        pa.field("annotation", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("seg_uri", pa.string()),
        pa.field("sr_uri", pa.string()),
        pa.field("qc_uri", pa.string()),
        pa.field("n_slices", pa.int64()),
        pa.field("slice_spacing_mm", pa.float64()),
        *_burden_fields(NodeSource.REFERENCE),
        *_burden_fields(NodeSource.PREDICTION),
        pa.field("dsc", pa.float64()),
        pa.field("assd_mm", pa.float64()),
        pa.field("n_reference_nodes_ge_10mm_detected", pa.int64()),
        pa.field("sensitivity_short_axis_ge_10mm", pa.float64()),
        pa.field("false_positive_nodes", pa.int64()),
        pa.field("pipeline_version", pa.string(), nullable=False),
        pa.field("processed_at", TIMESTAMP, nullable=False),
        *[pa.field(stage_column(stage), pa.float64()) for stage in TIMED_STAGES],
        pa.field("total_s", pa.float64()),
        # added after the first release: at the end, where BigQuery lets a table grow a column
        pa.field("detection_iou_threshold", pa.float64()),
        pa.field("sr_instance_uid", pa.string()),
    ]
)

NODES_SCHEMA = pa.schema(
    [
        pa.field("ct_series_instance_uid", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("node_index", pa.int64(), nullable=False),
        pa.field("voxel_count", pa.int64(), nullable=False),
        pa.field("volume_ml", pa.float64(), nullable=False),
        pa.field("centroid_x_mm", pa.float64()),
        pa.field("centroid_y_mm", pa.float64()),
        pa.field("centroid_z_mm", pa.float64()),
        pa.field("long_axis_mm", pa.float64()),
        pa.field("short_axis_mm", pa.float64()),
        pa.field("measurement_slice_z_mm", pa.float64()),
        pa.field("max_diameter_3d_mm", pa.float64()),
        pa.field("bbox_min_x_mm", pa.float64()),
        pa.field("bbox_min_y_mm", pa.float64()),
        pa.field("bbox_min_z_mm", pa.float64()),
        pa.field("bbox_max_x_mm", pa.float64()),
        pa.field("bbox_max_y_mm", pa.float64()),
        pa.field("bbox_max_z_mm", pa.float64()),
        pa.field("mean_hu", pa.float64()),
        pa.field("std_hu", pa.float64()),
        pa.field("recist_category", pa.string()),
        pa.field("tracking_uid", pa.string()),
        *[
            pa.field(f"{axis}_axis_{end}_{xyz}_mm", pa.float64())
            for axis in ("long", "short")
            for end in AXIS_ENDS
            for xyz in "xyz"
        ],
        # added after the first release: at the end, where BigQuery lets a table grow a column
        pa.field("quality_flag", pa.string()),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("ct_series_instance_uid", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
)

_CODE = pa.struct(
    [
        pa.field("CodeValue", pa.string()),
        pa.field("CodingSchemeDesignator", pa.string()),
        pa.field("CodeMeaning", pa.string()),
    ]
)

MEASUREMENTS_SCHEMA = pa.schema(
    [
        pa.field("PatientID", pa.string()),
        pa.field("SOPInstanceUID", pa.string(), nullable=False),
        pa.field("measurementGroup_number", pa.int64(), nullable=False),
        pa.field("segmentationInstanceUID", pa.string()),
        pa.field("segmentationSegmentNumber", pa.int64()),
        pa.field("sourceSegmentedSeriesUID", pa.string()),
        pa.field("trackingIdentifier", pa.string()),
        pa.field("trackingUniqueIdentifier", pa.string()),
        pa.field("Quantity", _CODE, nullable=False),
        pa.field("Value", pa.float64()),
        pa.field("Units", _CODE),
        pa.field("derivationModifier", _CODE),
        pa.field("finding", _CODE),
        pa.field("findingSite", _CODE),
    ]
)
"""The run's SRs flattened in the shape of IDC's ``quantitative_measurements`` view (one row per
numeric measurement; ``pipeline/dicom/sr_rows.py``), so our nodes join IDC's own measurements."""

TABLES: dict[str, pa.Schema] = {
    "series": SERIES_SCHEMA,
    "nodes": NODES_SCHEMA,
    "errors": ERRORS_SCHEMA,
    "measurements": MEASUREMENTS_SCHEMA,
}
"""Every published table, by name (the folder under the output and the BigQuery table)."""
PUBLISHED_SERIES_COLUMNS = ("sr_instance_uid",)
"""``series`` columns the publishing step fills (from the SR it flattens into ``measurements``), not
the series' outcome."""
SERIES_TABLES = ("series", "nodes", "errors")
"""The tables whose rows each series' outcome gives (kept as the series finishes); ``measurements``
is flattened from the published SRs when the tables are published."""

SORT_KEYS: dict[str, tuple[str, ...]] = {
    "series": ("ct_series_instance_uid",),
    "nodes": ("ct_series_instance_uid", "source", "node_index"),
    "errors": ("ct_series_instance_uid", "stage", "error_type", "message"),
    "measurements": ("SOPInstanceUID", "measurementGroup_number"),  # in report order within a group
}
"""How each table's rows are ordered, so reruns write the same files."""

TABLE_LAYOUT: dict[str, dict[str, Any]] = {
    "series": {"partition_field": "processed_at", "clustering": ["model", "status", "patient_id"]},
    "nodes": {"partition_field": None, "clustering": ["model", "source", "patient_id"]},
    "errors": {"partition_field": None, "clustering": ["model", "stage"]},
    "measurements": {
        "partition_field": None,
        "clustering": ["sourceSegmentedSeriesUID", "trackingUniqueIdentifier"],
    },
}
"""How each table is laid out in BigQuery: ``series`` partitioned by day of ``processed_at``, every
table clustered by what queries filter on (the loader creates them so; Terraform reads the same,
generated by ``make schemas``)."""


def conform(row: Mapping[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """``row`` with exactly the schema's columns; a missing or extra column is a bug."""
    names = schema.names  # a new list on every access: read once (it was most of a publish's time)
    if len(row) != len(names) or not all(n in row for n in names):
        known = set(names)
        missing = [n for n in names if n not in row]
        extra = [n for n in row if n not in known]
        raise KeyError(f"row does not fit schema: missing {missing}, unexpected {extra}")
    return {name: row[name] for name in names}


def sort_rows(rows: Iterable[Mapping[str, Any]], table: str) -> list[dict[str, Any]]:
    """Rows in the table's canonical order, so reruns write the same files."""
    keys = SORT_KEYS[table]

    def key(row: Mapping[str, Any]) -> tuple[tuple[bool, Any], ...]:
        return tuple((row[k] is None, row[k] if row[k] is not None else "") for k in keys)

    return sorted((dict(r) for r in rows), key=key)


def to_table(rows: Iterable[Mapping[str, Any]], table: str) -> pa.Table:
    """A pyarrow table for ``table`` from row dicts, checked against its schema."""
    schema = TABLES[table]
    conformed = [conform(r, schema) for r in sort_rows(rows, table)]
    return pa.Table.from_pylist(conformed, schema=schema)

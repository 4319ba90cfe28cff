from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from pipeline.outputs.schemas import TABLES, conform, sort_rows, to_table

BIGQUERY_TYPES = {pa.string(), pa.int64(), pa.float64(), pa.timestamp("us", tz="UTC")}


def test_every_column_has_a_bigquery_loadable_type() -> None:
    for name, schema in TABLES.items():
        for f in schema:
            types = [c.type for c in f.type] if pa.types.is_struct(f.type) else [f.type]  # a RECORD's fields
            assert all(t in BIGQUERY_TYPES for t in types), (name, f.name, f.type)


def test_contract_columns_present() -> None:
    assert {
        "ct_series_instance_uid",
        "patient_id",
        "study_instance_uid",
        "annotation",
        "status",
        "n_reference_nodes",
        "reference_volume_ml",
        "pipeline_version",
        "processed_at",
    } <= set(TABLES["series"].names)
    contract = [
        "ct_series_instance_uid",
        "patient_id",
        "source",
        "node_index",
        "voxel_count",
        "volume_ml",
        "centroid_x_mm",
        "centroid_y_mm",
        "centroid_z_mm",
    ]
    assert [n for n in TABLES["nodes"].names if n in contract] == contract
    assert "model" in TABLES["nodes"].names and "model" in TABLES["errors"].names
    assert {
        "long_axis_mm",
        "short_axis_mm",
        "measurement_slice_z_mm",
        "max_diameter_3d_mm",
        "bbox_min_x_mm",
        "bbox_max_z_mm",
        "mean_hu",
        "std_hu",
        "recist_category",
        "quality_flag",
    } <= set(TABLES["nodes"].names)
    assert "detection_iou_threshold" in TABLES["series"].names
    assert {
        "n_reference_nodes_short_axis_ge_10mm",
        "reference_sum_short_axis_pathological_mm",
        "reference_spd_mm2",
    } <= set(TABLES["series"].names)
    assert [n for n in TABLES["errors"].names if n != "model"] == [
        "ct_series_instance_uid",
        "stage",
        "error_type",
        "message",
    ]


def test_conform_refuses_missing_or_extra_columns() -> None:
    row = {
        "ct_series_instance_uid": "1",
        "model": "reference",
        "stage": "fetch",
        "error_type": "X",
        "message": "m",
    }
    assert conform(row, TABLES["errors"]) == row
    with pytest.raises(KeyError, match="missing \\['message'\\]"):
        conform({k: v for k, v in row.items() if k != "message"}, TABLES["errors"])
    with pytest.raises(KeyError, match="unexpected \\['extra'\\]"):
        conform({**row, "extra": 1}, TABLES["errors"])


def test_nodes_sort_numerically() -> None:
    rows = [{"ct_series_instance_uid": "1.2", "source": "reference", "node_index": i} for i in (10, 2, 1)]
    assert [r["node_index"] for r in sort_rows(rows, "nodes")] == [1, 2, 10]


def test_to_table_round_trip() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    row = {n: None for n in TABLES["series"].names}
    row.update(ct_series_instance_uid="1.2", status="ok", pipeline_version="0", processed_at=now)
    table = to_table([row], "series")
    assert table.schema.equals(TABLES["series"])
    assert table.to_pylist()[0]["processed_at"] == now

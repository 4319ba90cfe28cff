"""BigQuery at its boundary: the SQL parses, parameters are bound, rows and loads are built right."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest
import sqlglot
from google.cloud import bigquery

import queries
from beam_jobs.bigquery import (
    LAYOUT,
    bigquery_schema,
    load_results,
    merge_sql,
    run_analytics_bigquery,
    select_cohort_bigquery,
)
from pipeline.cohort.query import select_cohort
from pipeline.outputs.analytics import available_queries
from pipeline.outputs.schemas import COHORT_SCHEMA, TABLES


class FakeRow(dict):
    def items(self):  # type: ignore[override]
        return super().items()


class FakeJob:
    def __init__(self, rows: list[dict[str, Any]] | None = None):
        self.rows = rows or []

    def result(self) -> list[FakeRow]:
        return [FakeRow(r) for r in self.rows]


class FakeClient:
    """Records every call at the client boundary; answers queries with canned rows."""

    def __init__(self, rows: list[dict[str, Any]] | None = None):
        self.rows = rows or []
        self.calls: list[tuple[str, Any, Any]] = []

    def query(self, sql: str, job_config: Any = None) -> FakeJob:
        self.calls.append(("query", sql, job_config))
        return FakeJob(self.rows)

    def create_table(self, table: Any, exists_ok: bool = False) -> None:
        self.calls.append(("create_table", table, exists_ok))

    def load_table_from_uri(self, uri: str, destination: str, job_config: Any = None) -> FakeJob:
        self.calls.append(("load", (uri, destination), job_config))
        return FakeJob()

    def get_table(self, table_id: str) -> Any:
        return type("T", (), {"num_rows": 7})()


def test_cohort_sql_parses_as_bigquery_and_binds_parameters() -> None:
    sql = queries.load("bigquery/lnq_cohort")
    (tree,) = sqlglot.parse(sql, read="bigquery")
    assert {t.name for t in tree.find_all(sqlglot.exp.Table)} >= {"dicom_all"}
    assert {p.name for p in tree.find_all(sqlglot.exp.Parameter)} == {"collection_id", "annotation"}
    literals = {lit.this for lit in tree.find_all(sqlglot.exp.Literal) if lit.is_string}
    assert "mediastinal_lymph_node_seg" not in literals  # bound, never formatted in
    output = [s.alias_or_name for s in tree.selects]
    assert output == ["*"]
    inner = [s.alias_or_name for s in tree.find(sqlglot.exp.CTE, bfs=True).this.selects]
    assert "SeriesInstanceUID" in inner


def test_cohort_rows_from_bigquery_match_the_idc_index_contract() -> None:
    """Rows shaped like BigQuery's answer (here: idc-index's, the same data) give the same table."""
    expected = select_cohort(annotation="full", limit=5)
    client = FakeClient(rows=expected.to_pylist())
    table = select_cohort_bigquery(client, annotation="full", limit=5)
    assert table.schema.equals(COHORT_SCHEMA)
    assert table.equals(expected)
    ((_, _, config),) = client.calls
    params = {p.name: (p.type_, p.value) for p in config.query_parameters}
    assert params == {
        "collection_id": ("STRING", "mediastinal_lymph_node_seg"),
        "annotation": ("STRING", "full"),
    }


def test_bigquery_schema_from_the_one_declaration() -> None:
    schema = bigquery_schema("series")
    assert [f.name for f in schema] == TABLES["series"].names
    types = {f.name: (f.field_type, f.mode) for f in schema}
    assert types["processed_at"] == ("TIMESTAMP", "REQUIRED")
    assert types["dsc"] == ("FLOAT64", "NULLABLE")
    assert types["n_reference_nodes"] == ("INT64", "NULLABLE")


def test_load_results_stages_then_replaces_the_runs_rows() -> None:
    client = FakeClient()
    loaded = load_results(client, output="gs://bucket/runs/r1/", dataset="proj.lnq")
    assert loaded == {"series": 7, "nodes": 7, "errors": 7}
    loads = [c for c in client.calls if c[0] == "load"]
    assert [c[1] for c in loads] == [
        ("gs://bucket/runs/r1/series/*.parquet", "proj.lnq.series_staging"),
        ("gs://bucket/runs/r1/nodes/*.parquet", "proj.lnq.nodes_staging"),
        ("gs://bucket/runs/r1/errors/*.parquet", "proj.lnq.errors_staging"),
    ]
    for _, _, config in loads:
        assert config.source_format == bigquery.SourceFormat.PARQUET
        assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    created = {c[1].table_id: c[1] for c in client.calls if c[0] == "create_table"}
    assert created["series"].time_partitioning.field == "processed_at"
    assert created["nodes"].clustering_fields == LAYOUT["nodes"]["clustering"]
    merges = [c[1] for c in client.calls if c[0] == "query"]
    assert merges[0] == merge_sql("proj.lnq.series", "proj.lnq.series_staging")


def test_scheduling_sql_parses_as_bigquery() -> None:
    pending = sqlglot.parse_one(queries.load("bigquery/pending_series"), read="bigquery")
    assert {p.name for p in pending.find_all(sqlglot.exp.Parameter)} == {"model"}
    check = queries.load("bigquery/check_run_complete").replace("{dataset}", "proj.lnq")
    tree = sqlglot.parse_one(check, read="bigquery")
    assert {t.name for t in tree.find_all(sqlglot.exp.Table)} == {"cohort_pending", "series_staging"}


def test_merge_sql_parses_and_refuses_odd_identifiers() -> None:
    statements = sqlglot.parse(merge_sql("p.d.nodes", "p.d.nodes_staging"), read="bigquery")
    assert [type(s).__name__ for s in statements] == ["Delete", "Insert"]
    with pytest.raises(ValueError, match="PROJECT.DATASET.TABLE"):
        merge_sql("p.d.nodes`; DROP TABLE x; --", "p.d.s")
    with pytest.raises(ValueError, match="PROJECT.DATASET"):
        load_results(FakeClient(), output="gs://b/r", dataset="not a dataset")
    with pytest.raises(ValueError, match="Cloud Storage"):
        load_results(FakeClient(), output="/local/folder", dataset="p.d")


def test_analytics_queries_parse_as_bigquery_and_run_with_default_dataset() -> None:
    assert {"node_burden", "recist_categories", "model_agreement"} <= set(available_queries())
    for name in available_queries():
        (tree,) = sqlglot.parse(queries.load(f"analytics/{name}"), read="bigquery")
        ctes = {c.alias for c in tree.find_all(sqlglot.exp.CTE)}
        assert {t.name for t in tree.find_all(sqlglot.exp.Table)} - ctes <= {"series", "nodes", "errors"}
    client = FakeClient(rows=[{"patient_id": "p1", "n_nodes": 3, "at": dt.datetime(2026, 1, 1)}])
    table = run_analytics_bigquery(client, dataset="proj.lnq", name="node_burden")
    assert isinstance(table, pa.Table) and table.num_rows == 1
    ((_, _, config),) = client.calls
    assert config.default_dataset.dataset_id == "lnq" and config.default_dataset.project == "proj"

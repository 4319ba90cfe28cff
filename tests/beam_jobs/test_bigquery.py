"""BigQuery at its boundary: the SQL parses, parameters are bound, rows and loads are built right."""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from google.cloud import bigquery

import queries
from beam_jobs.bigquery import (
    bigquery_schema,
    check_dataset,
    cohort_sql,
    load_results,
    merge_sql,
    run_analytics_bigquery,
    select_cohort_bigquery,
)
from pipeline.cohort.query import bundled_index_path, select_cohort
from pipeline.outputs.analytics import available_queries
from pipeline.outputs.schemas import COHORT_SCHEMA, TABLE_LAYOUT, TABLES
from queries.sql_text import fill_identifiers, with_relation


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
    cohort = sqlglot.parse_one(queries.load("bigquery/lnq_cohort"), read="bigquery")
    ctes = {c.alias for c in cohort.find_all(sqlglot.exp.CTE)}
    assert {t.name for t in cohort.find_all(sqlglot.exp.Table)} - ctes == {"index"}  # idc-index's
    (tree,) = sqlglot.parse(cohort_sql(), read="bigquery")
    ctes = {c.alias for c in tree.find_all(sqlglot.exp.CTE)}
    assert ctes == {"index", "ct", "seg", "paired"}
    assert {".".join(p.name for p in t.parts) for t in tree.find_all(sqlglot.exp.Table)} - ctes == {
        "bigquery-public-data.idc_current.dicom_all"
    }
    assert {p.name for p in tree.find_all(sqlglot.exp.Parameter)} == {"collection_id", "annotation"}
    literals = {lit.this for lit in tree.find_all(sqlglot.exp.Literal) if lit.is_string}
    assert "mediastinal_lymph_node_seg" not in literals  # bound, never formatted in
    assert [s.alias_or_name for s in tree.selects] == ["*"]


class DuckDBClient:
    """BigQuery's ``query`` played by DuckDB: the SQL translated with sqlglot, parameters bound by name."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.calls: list[tuple[str, Any]] = []

    def query(self, sql: str, job_config: Any = None) -> FakeJob:
        self.calls.append((sql, job_config))
        (statement,) = sqlglot.transpile(sql, read="bigquery", write="duckdb")
        params = {p.name: p.value for p in job_config.query_parameters}
        result = self.con.execute(statement, params)
        names = [d[0] for d in result.description]
        return FakeJob([dict(zip(names, row, strict=True)) for row in result.fetchall()])


@pytest.fixture(scope="module")
def dicom_all() -> duckdb.DuckDBPyConnection:
    """``bigquery-public-data.idc_current.dicom_all`` (one row per instance, the columns the cohort
    reads) unfolded from idc-index's bundled series index: LNQ and one more collection."""
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS \"bigquery-public-data\"")
    con.execute('CREATE SCHEMA "bigquery-public-data".idc_current')
    con.read_parquet(bundled_index_path()).create_view("idc_index")
    con.execute(
        """
        CREATE TABLE "bigquery-public-data".idc_current.dicom_all AS
        WITH series AS (
            SELECT *, CAST(round(series_size_MB * 1000000) AS BIGINT) AS bytes
            FROM idc_index
            WHERE collection_id IN ('mediastinal_lymph_node_seg', 'lung_pet_ct_dx')
            UNION ALL  -- an analysis result in an LNQ study, as IDC files them: same collection_id
            SELECT * REPLACE (
                'ai-seg-1' AS analysis_result_id, SeriesInstanceUID || '.99' AS SeriesInstanceUID,
                'SEG' AS Modality, 'Fully Annotated' AS SeriesDescription, 1 AS instanceCount,
                '00000000-0000-0000-0000-000000000001' AS crdc_series_uuid
            ), 1000 AS bytes
            FROM idc_index
            WHERE collection_id = 'mediastinal_lymph_node_seg' AND Modality = 'CT'
            QUALIFY row_number() OVER (ORDER BY SeriesInstanceUID) <= 3
        ),
        instances AS (SELECT *, unnest(range(instanceCount)) AS n FROM series)
        SELECT
            collection_id, PatientID, StudyInstanceUID, SeriesInstanceUID, Modality,
            coalesce(SeriesDescription, '') AS SeriesDescription,
            SeriesInstanceUID || '.' || n AS SOPInstanceUID,
            analysis_result_id, aws_bucket, crdc_series_uuid,
            bytes // instanceCount + CASE WHEN n = 0 THEN bytes % instanceCount ELSE 0 END AS instance_size
        FROM instances
        """
    )
    return con


@pytest.mark.parametrize("annotation", ["all", "full", "partial"])
def test_bigquery_cohort_is_the_offline_cohort(dicom_all: duckdb.DuckDBPyConnection, annotation: str) -> None:
    """The BigQuery cohort (lnq_cohort.sql over idc_series_index.sql over dicom_all) gives, on the
    instances of idc-index's bundled index, exactly the table the offline cohort gives."""
    client = DuckDBClient(dicom_all)
    table = select_cohort_bigquery(client, annotation=annotation)
    expected = select_cohort(annotation=annotation)
    assert table.num_rows == {"all": 513, "full": 120, "partial": 393}[annotation]
    assert table.equals(expected)
    ((sql, config),) = client.calls
    assert sql == cohort_sql()
    params = {p.name: (p.type_, p.value) for p in config.query_parameters}
    assert params == {
        "collection_id": ("STRING", "mediastinal_lymph_node_seg"),
        "annotation": ("STRING", annotation),
    }


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
    assert loaded == {"series": 7, "nodes": 7, "errors": 7, "measurements": 7}
    loads = [c for c in client.calls if c[0] == "load"]
    assert [c[1] for c in loads] == [
        (f"gs://bucket/runs/r1/{t}/*.parquet", f"proj.lnq.{t}_staging")
        for t in ("series", "nodes", "errors", "measurements")
    ]
    for _, _, config in loads:
        assert config.source_format == bigquery.SourceFormat.PARQUET
        assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    created = {c[1].table_id: c[1] for c in client.calls if c[0] == "create_table"}
    assert created["series"].time_partitioning.field == "processed_at"
    assert created["nodes"].clustering_fields == TABLE_LAYOUT["nodes"]["clustering"]
    assert created["measurements"].clustering_fields == TABLE_LAYOUT["measurements"]["clustering"]
    merges = [c[1] for c in client.calls if c[0] == "query"]
    # measurements first (they find the SRs they replace through the old series rows), series last
    assert merges == [merge_sql("proj.lnq", t) for t in ("measurements", "nodes", "errors", "series")]
    for merge in merges:
        assert "`proj.lnq.series_staging` AS k" in merge  # keyed by the run's series


def test_scheduling_sql_parses_as_bigquery() -> None:
    pending = sqlglot.parse_one(queries.load("bigquery/pending_series"), read="bigquery")
    assert {p.name for p in pending.find_all(sqlglot.exp.Parameter)} == {"model"}
    check = fill_identifiers(queries.load("bigquery/check_run_complete"), dataset="proj.lnq")
    tree = sqlglot.parse_one(check, read="bigquery")
    assert {t.name for t in tree.find_all(sqlglot.exp.Table)} == {"cohort_pending", "series_staging"}


def test_merge_sql_parses_and_refuses_odd_identifiers() -> None:
    for table in TABLES:
        statements = sqlglot.parse(merge_sql("p.d", table), read="bigquery")
        assert [type(s).__name__ for s in statements] == ["Delete", "Insert"]
    with pytest.raises(ValueError, match="PROJECT.DATASET.TABLE"):
        merge_sql("p.d`; DROP TABLE x; --", "nodes")
    with pytest.raises(ValueError, match="PROJECT.DATASET"):
        load_results(FakeClient(), output="gs://b/r", dataset="not a dataset")
    with pytest.raises(ValueError, match="Cloud Storage"):
        load_results(FakeClient(), output="/local/folder", dataset="p.d")


def test_fill_identifiers_validates_every_identifier_before_filling() -> None:
    sql = "SELECT * FROM `{target}` JOIN `{dataset}.t` USING (k) -- {target}"
    assert fill_identifiers(sql, target="my-proj.d_1.t2", dataset="my-proj.d_1") == (
        "SELECT * FROM `my-proj.d_1.t2` JOIN `my-proj.d_1.t` USING (k) -- my-proj.d_1.t2"
    )
    for bad in (
        "p.d",
        "p.d.t.x",
        "p.d.t`",
        "p.d.t; DROP",
        "p.d.{dataset}",
        "`p`.d.t",
        "p.d.t\n",
        "",
        "-p.d.t",
    ):
        with pytest.raises(ValueError, match="is not PROJECT.DATASET.TABLE"):
            fill_identifiers(sql, target=bad, dataset="p.d")
    for bad in ("p", "p.d.t", "p.d`", "p .d"):
        with pytest.raises(ValueError, match="is not PROJECT.DATASET"):
            fill_identifiers(sql, target="p.d.t", dataset=bad)
        with pytest.raises(ValueError, match="is not PROJECT.DATASET"):
            check_dataset(bad)
    with pytest.raises(ValueError, match=r"placeholders \['dataset', 'target'\]"):
        fill_identifiers(sql, target="p.d.t")  # one left unfilled
    with pytest.raises(ValueError, match="identifiers were given for"):
        fill_identifiers("SELECT 1", target="p.d.t")  # nothing to fill


def test_with_relation_puts_one_cte_in_front() -> None:
    sql = "-- a query\n\nwith a AS (SELECT x FROM r)\nSELECT * FROM a\n"
    combined = with_relation(sql, "r", "-- r\nSELECT 1 AS x;\n")
    assert (
        combined
        == "-- a query\n\nWITH r AS (\n-- r\nSELECT 1 AS x\n),\na AS (SELECT x FROM r)\nSELECT * FROM a\n"
    )
    assert duckdb.sql(combined).fetchall() == [(1,)]
    with pytest.raises(ValueError, match="must start with WITH"):
        with_relation("SELECT 1", "r", "SELECT 1")
    with pytest.raises(ValueError, match="not a relation name"):
        with_relation(sql, "r) AS (SELECT 2", "SELECT 1")


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


def test_measurements_are_loaded_with_records() -> None:
    fields = {f.name: f for f in bigquery_schema("measurements")}
    assert fields["Quantity"].field_type == "RECORD" and fields["Value"].field_type == "FLOAT64"
    assert [c.name for c in fields["finding"].fields] == [
        "CodeValue",
        "CodingSchemeDesignator",
        "CodeMeaning",
    ]


@pytest.mark.slow
def test_the_published_measurements_are_the_runs_srs_flattened(phantom, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The job publishes the measurements table in IDC's shape with the other tables; it agrees with
    the nodes table node for node, and each series row names the SR its measurements come from."""
    import pydicom

    from beam_jobs.cli import main
    from beam_jobs.publish import read_table
    from tests.support.cohort import cohort_row, write_cohort

    cohort = tmp_path / "cohort.parquet"
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    write_cohort(cohort, [row])
    out = tmp_path / "out"
    assert main(["run", "--cohort", str(cohort), "--output", str(out)]) == 0
    table = read_table(str(out), "measurements").to_pylist()
    (series,) = read_table(str(out), "series").to_pylist()
    assert (
        series["sr_instance_uid"] == pydicom.dcmread(out / "sr" / f"{phantom.series_uid}.dcm").SOPInstanceUID
    )
    assert {r["SOPInstanceUID"] for r in table} == {series["sr_instance_uid"]}
    nodes = {r["tracking_uid"]: r for r in read_table(str(out), "nodes").to_pylist()}
    volumes = [r for r in table if r["Quantity"]["CodeValue"] == "118565006"]
    assert len(volumes) == len(nodes) == 3
    for r in volumes:
        assert r["Value"] == pytest.approx(nodes[r["trackingUniqueIdentifier"]]["volume_ml"], rel=1e-9)
        assert r["sourceSegmentedSeriesUID"] == phantom.series_uid
        assert r["Units"]["CodeValue"] == "mL" and r["finding"]["CodeValue"] == "59441001"


def _measurement(sr_uid: str, series_uid: str, value: float) -> dict[str, Any]:
    code = {"CodeValue": "118565006", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Volume"}
    row = dict.fromkeys(TABLES["measurements"].names)
    row.update(
        SOPInstanceUID=sr_uid,
        measurementGroup_number=0,
        sourceSegmentedSeriesUID=series_uid,
        Quantity=code,
        Value=value,
    )
    return row


def _stage(engine: Any, tmp_path, run: str, tables: dict[str, list[dict[str, Any]]]) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from pipeline.outputs.schemas import to_table

    for table, rows in tables.items():
        path = tmp_path / f"{run}-{table}.parquet"
        pq.write_table(to_table(rows, table), path)
        engine.load_parquet(f"p.lnq.{table}_staging", [path])
    for table in ("measurements", "nodes", "errors", "series"):
        engine.query(merge_sql("p.lnq", table))


def test_a_reload_replaces_every_row_of_each_reloaded_series(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The merge SQL on a real engine (DuckDB, through sqlglot): a series that goes from error to ok
    leaves no error row; a result with no nodes (and no SR) leaves no node or measurement of the
    earlier one; series not in the reload keep their rows; a reload of the same run duplicates nothing."""
    from pathlib import Path

    from tests.support.bq_duckdb import DuckBigQuery
    from tests.support.results import synthetic_outcome

    engine = DuckBigQuery(tmp_path / "bq")
    engine.create_from_terraform("p.lnq", Path("infra/terraform/schemas"), TABLES)
    a, b, c = (synthetic_outcome(i, n_nodes=n) for i, n in ((0, 2), (1, 0), (2, 1)))
    uid = {name: r.series["ct_series_instance_uid"] for name, r in zip("abc", (a, b, c), strict=True)}
    failed_b = {**b.series, "status": "error"}
    error_b = {
        "ct_series_instance_uid": uid["b"],
        "model": "reference",
        "stage": "fetch",
        "error_type": "FetchError",
        "message": "m",
    }
    first = {
        "series": [
            {**a.series, "sr_instance_uid": "2.25.1"},
            failed_b,
            {**c.series, "sr_instance_uid": "2.25.3"},
        ],
        "nodes": a.nodes + c.nodes,
        "errors": [error_b],
        "measurements": [_measurement("2.25.1", uid["a"], 1.0), _measurement("2.25.3", uid["c"], 3.0)],
    }
    _stage(engine, tmp_path, "first", first)
    # the second run reloads a (now without nodes or SR) and b (now ok, with a node and an SR)
    b_node = {**c.nodes[0], "ct_series_instance_uid": uid["b"]}
    second = {
        "series": [{**a.series, "n_slices": 99}, {**b.series, "sr_instance_uid": "2.25.2"}],
        "nodes": [b_node],
        "errors": [],
        "measurements": [_measurement("2.25.2", uid["b"], 2.0)],
    }
    for _ in range(2):  # the same reload twice: nothing duplicates
        _stage(engine, tmp_path, "second", second)
        assert {(r["ct_series_instance_uid"], r["status"]) for r in engine.rows("p.lnq.series")} == {
            (uid["a"], "ok"),
            (uid["b"], "ok"),
            (uid["c"], "ok"),
        }
        assert engine.rows("p.lnq.errors") == []  # b's old error row is gone
        assert sorted(r["ct_series_instance_uid"] for r in engine.rows("p.lnq.nodes")) == sorted(
            [uid["b"], uid["c"]]
        )
        assert sorted(r["SOPInstanceUID"] for r in engine.rows("p.lnq.measurements")) == ["2.25.2", "2.25.3"]

"""Analytics SQL (BigQuery dialect) run locally on DuckDB over a phantom run's Parquet."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from beam_jobs.launch import run
from pipeline.outputs.analytics import decimals, duckdb_sql, format_result, run_query
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.models import HuWindow, save_torchscript
from tests.support.phantoms import make_phantom


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("analytics")
    phantoms = [
        make_phantom(
            base / f"p{i}",
            patient_id=f"patient_{i}",
            seed=80 + i,
            shape_zyx=(32, 80, 80),
            noise_sd=0.0,
            anatomy=False,
            annotation="full" if i == 0 else "partial",
        )
        for i in range(2)
    ]
    rows = [cohort_row(p, ct_url=str(p.ct_dir), seg_url=str(p.seg_path)) for p in phantoms]
    rows.append(
        cohort_row(
            phantoms[0],
            ct_url="/nowhere",
            seg_url=None,
            ct_series_instance_uid="1.2.3.9",
            patient_id="patient_failed",
        )
    )
    cohort = base / "cohort.parquet"
    write_cohort(cohort, rows)
    model = save_torchscript(HuWindow(40.0, 70.0), base / "window.pt", patch_size=(8, 40, 40))
    output = base / "out"
    run(
        [
            "--cohort",
            str(cohort),
            "--output",
            str(output),
            "--model",
            f"torchscript:{model}",
            "--device",
            "cpu",
        ]
    )
    return output, phantoms


def test_node_burden_numbers(phantom_run) -> None:
    output, phantoms = phantom_run
    rows = run_query(str(output), "node_burden").to_pylist()
    assert {r["patient_id"] for r in rows} == {"patient_0", "patient_1"}  # the failed series is left out
    for p in phantoms:
        for source in ("reference", "prediction"):
            (r,) = [r for r in rows if r["patient_id"] == p.patient_id and r["source"] == source]
            assert r["n_series"] == 1 and r["n_nodes"] == 3
            assert r["n_nodes_short_axis_ge_10mm"] == 2  # the default nodes: target, non-target, normal
            assert r["n_nodes_short_axis_ge_15mm"] == 1
            assert r["total_volume_ml"] == pytest.approx(p.mask.sum() * np.prod(p.spacing_mm) / 1000)
            assert r["max_short_axis_mm"] == pytest.approx(16.0, abs=1.7)


def test_recist_categories_and_model_agreement(phantom_run) -> None:
    output, _ = phantom_run
    categories = run_query(str(output), "recist_categories").to_pylist()
    counts = {(r["source"], r["recist_category"], r["quality_flag"]): r["n_nodes"] for r in categories}
    assert counts == {
        (s, c, "ok"): 2 for s in ("prediction", "reference") for c in ("non_target", "normal", "target")
    }
    agreement = {r["annotation"]: r for r in run_query(str(output), "model_agreement").to_pylist()}
    assert agreement["full"]["dsc_mean"] == pytest.approx(1.0)
    assert agreement["full"]["false_positive_nodes"] == 0
    assert agreement["partial"]["false_positive_nodes"] is None  # not counted for partial annotations
    assert agreement["full"]["volume_bias_ml"] == pytest.approx(0.0, abs=1e-9)
    assert agreement["full"]["sensitivity_short_axis_ge_10mm"] == 1.0  # pooled over nodes, as the report
    assert agreement["full"]["detection_iou_threshold"] == 0.1


def test_cli_json_is_one_array_of_row_objects(phantom_run) -> None:
    output, _ = phantom_run
    done = subprocess.run(
        [
            *LNQ,
            "analytics",
            "--output",
            str(output),
            "--query",
            "node_burden",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list) and len(rows) == 4
    assert {"patient_id", "source", "n_nodes", "n_nodes_short_axis_ge_10mm", "total_volume_ml"} <= set(
        rows[0]
    )
    assert all(type(r["n_nodes_short_axis_ge_10mm"]) is int for r in rows)  # was 1.0: a count is an integer
    done = subprocess.run(
        [
            *LNQ,
            "analytics",
            "--output",
            str(output),
            "--query",
            "model_agreement",
        ]
        + ["--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    by_annotation = {r["annotation"]: r for r in json.loads(done.stdout)}
    assert by_annotation["partial"]["false_positive_nodes"] is None
    assert type(by_annotation["full"]["false_positive_nodes"]) is int  # an integer column with a null in it


def test_counts_come_back_as_integers_as_on_bigquery(phantom_run) -> None:
    """DuckDB answers COUNTIF and SUM of INT64 with HUGEINT (decimal128); BigQuery with INT64."""
    output, _ = phantom_run
    burden = run_query(str(output), "node_burden").schema
    agreement = run_query(str(output), "model_agreement").schema
    for schema, column in [
        (burden, "n_nodes"),
        (burden, "n_nodes_short_axis_ge_10mm"),
        (burden, "n_nodes_short_axis_ge_15mm"),
        (agreement, "n_empty_predictions"),
        (agreement, "false_positive_nodes"),
    ]:
        assert schema.field(column).type == pa.int64(), column


def test_format_result_keeps_integers_integers_and_nulls_null(phantom_run) -> None:
    output, _ = phantom_run
    burden = run_query(str(output), "node_burden")
    agreement = run_query(str(output), "model_agreement")  # false_positive_nodes: 0 (full), null (partial)

    rows = json.loads(format_result(burden, "json"))
    assert rows == burden.to_pylist()
    assert all(type(r[c]) is int for r in rows for c in ("n_series", "n_nodes_short_axis_ge_10mm"))
    by_annotation = {r["annotation"]: r for r in json.loads(format_result(agreement, "json"))}
    assert by_annotation["full"]["false_positive_nodes"] == 0
    assert type(by_annotation["full"]["false_positive_nodes"]) is int
    assert by_annotation["partial"]["false_positive_nodes"] is None
    assert type(by_annotation["partial"]["n_empty_predictions"]) is int

    text = format_result(agreement, "csv")
    parsed = {r["annotation"]: r for r in csv.DictReader(io.StringIO(text))}
    assert text.splitlines()[0].split(",") == agreement.column_names
    assert parsed["full"]["false_positive_nodes"] == "0" and parsed["partial"]["false_positive_nodes"] == ""
    assert parsed["full"]["n_series"] == "1"
    assert {
        r["n_nodes_short_axis_ge_10mm"] for r in csv.DictReader(io.StringIO(format_result(burden, "csv")))
    } == {"2"}

    cells = {r["annotation"]: r for r in _table_rows(format_result(agreement, "table"))}
    assert cells["full"]["false_positive_nodes"] == "0" and cells["partial"]["false_positive_nodes"] == "null"
    with pytest.raises(ValueError, match="format 'xml' is not one of"):
        format_result(agreement, "xml")


def _table_rows(text: str) -> list[dict[str, str]]:
    """Rows of ``--format table`` output, whose columns may continue in blocks below each other."""
    rows: list[dict[str, str]] = []
    for block in text.strip("\n").split("\n\n"):
        lines = [line.rstrip(" \\").split() for line in block.splitlines()]
        rows = rows or [{} for _ in lines[1:]]
        for row, cells in zip(rows, lines[1:], strict=True):
            row.update(zip(lines[0], cells, strict=True))
    return rows


def test_table_format_is_readable_in_120_columns_with_rounded_floats(phantom_run) -> None:
    """model_agreement was 230 characters wide, with floats such as 0.9999999999999998."""
    output, _ = phantom_run
    agreement = run_query(str(output), "model_agreement")
    text = format_result(agreement, "table")
    assert max(len(line) for line in text.splitlines()) <= 120
    rows = _table_rows(text)
    assert [r["annotation"] for r in rows] == ["full", "partial"]
    assert set(rows[0]) == set(agreement.column_names)
    exact = {r["annotation"]: r for r in agreement.to_pylist()}
    for row in rows:
        assert row["dsc_mean"] == f"{exact[row['annotation']]['dsc_mean']:.3f}"
        assert row["volume_bias_ml"] == f"{exact[row['annotation']]['volume_bias_ml']:.2f}"
        assert row["detection_iou_threshold"] == "0.10"
    assert rows[0]["assd_mm_mean"] == f"{exact['full']['assd_mm_mean']:.2f}"
    assert decimals("max_short_axis_mm") == 1 and decimals("sum_short_axis_pathological_mm") == 1


def test_translation_and_unknown_query(tmp_path: Path) -> None:
    assert "COUNT_IF" in duckdb_sql("node_burden")
    with pytest.raises(ValueError, match="no analytics query 'nope'"):
        duckdb_sql("nope")
    with pytest.raises(FileNotFoundError, match="no series/ Parquet"):
        run_query(str(tmp_path), "node_burden")
    with pytest.raises(ValueError, match=r"no analytics query 'nope'; available: \['model_agreement'"):
        run_query(str(tmp_path), "nope")  # the name is checked before the folder
    with pytest.raises(ValueError, match="no analytics query '../bigquery/merge_results'"):
        duckdb_sql("../bigquery/merge_results")

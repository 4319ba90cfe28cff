"""The Composer DAG, run end to end with Airflow's ``dag.test()`` twice, as two monthly runs.

Airflow 2.10.5 (Composer's) in its own virtual environment loads the deployed DAG and runs it; only
BigQuery (DuckDB through sqlglot, the DAG's own SQL) and the Dataflow launch (the same flex entry
point with the launch's parameters, on Beam's local runner) are stand-ins (``dag_run_check.py``).
IDC's bucket is a local S3 server with the phantoms' files, IDC's ``dicom_all`` a table of their
instances, the results bucket the Cloud Storage emulator.

- Run 1: two series; series B has a cut-short CT file (its error row). The first try of the launch
  is killed after one series: the task fails and its retry, in the same run folder, resumes the
  kept series, takes over the dead job's lock and publishes.
- Run 2: B's file is whole again; only B is pending; after the reload B is ok and no stale
  ``errors`` row remains, while A's rows stay.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.test_composer_dag import AIRFLOW_PYTHON, deploy
from tests.support.bq_duckdb import DuckBigQuery
from tests.support.phantoms import make_phantom
from tests.support.s3 import BUCKET

REPO = Path(__file__).resolve().parents[2]
PROJECT = "lnq-test-project"
DATASET = f"{PROJECT}.lnq_results"
LNQ_COLLECTION = "mediastinal_lymph_node_seg"


def _upload(client, files: list[Path], series_uuid: str) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    keys = []
    for i, f in enumerate(files):
        key = f"{series_uuid}/{i:08d}-0000-0000-0000-000000000000.dcm"
        client.upload_file(str(f), BUCKET, key, ExtraArgs={"ACL": "public-read"})
        keys.append((key, f.stat().st_size))
    return keys


def _dicom_all(engine: DuckBigQuery, phantoms: list, uploaded: dict[str, list[tuple[str, int]]]) -> None:  # type: ignore[no-untyped-def]
    """IDC's instance-level table, for the phantoms' series as uploaded."""
    table = "bigquery-public-data.idc_current.dicom_all"
    fields = [
        {"name": n, "type": t}
        for n, t in [
            ("collection_id", "STRING"),
            ("analysis_result_id", "STRING"),
            ("PatientID", "STRING"),
            ("StudyInstanceUID", "STRING"),
            ("SeriesInstanceUID", "STRING"),
            ("Modality", "STRING"),
            ("SeriesDescription", "STRING"),
            ("SOPInstanceUID", "STRING"),
            ("aws_bucket", "STRING"),
            ("crdc_series_uuid", "STRING"),
            ("instance_size", "INT64"),
        ]
    ]
    engine.create_table(table, fields)
    rows = []
    for p in phantoms:
        for modality, series_uid, description in (
            ("CT", p.series_uid, ""),
            ("SEG", p.seg_series_uid, "Fully Annotated"),
        ):
            for i, (key, size) in enumerate(uploaded[series_uid]):
                uuid = key.split("/")[0]
                sop = f"{series_uid}.{i + 1}"
                rows.append(
                    (
                        LNQ_COLLECTION,
                        None,
                        p.patient_id,
                        p.study_uid,
                        series_uid,
                        modality,
                        description,
                        sop,
                        BUCKET,
                        uuid,
                        size,
                    )
                )
    engine.con.executemany(
        f"INSERT INTO {engine._ident(table)} VALUES ({', '.join('?' * len(fields))})",
        rows,
    )


def _run_dag(home: Path, dags: Path, logical_date: str, conf: dict, bq: Path, **extra: str) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": "",  # the project is not importable in Composer
        "LNQ_PROJECT": PROJECT,
        "LNQ_DATASET": DATASET,
        "LNQ_RESULTS_BUCKET": "lnq-results",
        "LNQ_STAGING_BUCKET": "lnq-staging",
        "LNQ_TEMP_BUCKET": "lnq-temp",
        "LNQ_WORKER_IMAGE": "us-central1-docker.pkg.dev/lnq-test-project/lnq/lnq-worker:latest",
        "LNQ_RETRY_DELAY_S": "1",
        "LNQ_TEST_REPO": str(REPO),
        "LNQ_TEST_PYTHON": sys.executable,
        "LNQ_TEST_BQ": str(bq),
        **extra,
    }
    done = subprocess.run(
        [
            str(AIRFLOW_PYTHON),
            str(REPO / "tests" / "infra" / "dag_run_check.py"),
            str(dags),
            logical_date,
            json.dumps(conf),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    (bq.parent / f"dag-{logical_date[:10]}.log").write_text(done.stderr)  # beside the test's files
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_scheduled_runs_retry_resume_and_leave_no_stale_rows(  # type: ignore[no-untyped-def]
    gcs_bucket: str, s3_endpoint: str, s3_client, tmp_path: Path
) -> None:
    if not AIRFLOW_PYTHON.exists():
        pytest.fail(f"no Airflow environment at {AIRFLOW_PYTHON.parent.parent}: run `make airflow-venv`")
    probe = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", "import duckdb, sqlglot"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.fail(
            "the Airflow environment lacks duckdb and sqlglot: "
            "remove .venv-airflow and run `make airflow-venv`"
        )
    assert gcs_bucket == "lnq-results"
    phantoms = [
        make_phantom(
            tmp_path / name,
            patient_id=f"case_{i}",
            seed=300 + i,
            shape_zyx=(16, 48, 48),
            noise_sd=0.0,
            anatomy=False,
        )
        for i, name in enumerate(("a", "b"))
    ]
    a, b = phantoms
    uploaded = {}
    for i, p in enumerate(phantoms):
        uploaded[p.series_uid] = _upload(
            s3_client, sorted(p.ct_dir.iterdir()), f"0000000{i}-1111-2222-3333-444444444444"
        )
        uploaded[p.seg_series_uid] = _upload(
            s3_client, [p.seg_path], f"0000000{i}-5555-6666-7777-888888888888"
        )
    # run 1: one of B's CT files is cut short (its listing agrees: a decoding error, B's own row)
    b_files = sorted(b.ct_dir.iterdir())
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b_files[3].read_bytes()[:600])
    s3_client.upload_file(str(broken), BUCKET, uploaded[b.series_uid][3][0], ExtraArgs={"ACL": "public-read"})
    uploaded[b.series_uid][3] = (uploaded[b.series_uid][3][0], broken.stat().st_size)

    bq = tmp_path / "bigquery"
    engine = DuckBigQuery(bq)
    _dicom_all(engine, phantoms, uploaded)
    engine.create_from_terraform(
        DATASET, REPO / "infra" / "terraform" / "schemas", ("series", "nodes", "errors", "measurements")
    )
    engine.close()
    dags = deploy(tmp_path / "dags")
    home = tmp_path / "airflow-home"
    conf = {"s3_endpoint": s3_endpoint}

    first = _run_dag(home, dags, "2026-01-01T00:00:00", conf, bq, LNQ_TEST_KILL_FIRST_LAUNCH="1")
    assert first["state"] == "success", first
    assert first["tasks"]["reprocess"] == {"state": "success", "try_number": 2}  # failed once, then resumed
    assert first["launches"] == ["lnq-20260101t000000-1", "lnq-20260101t000000-2"]
    log = (tmp_path / "dag-2026-01-01.log").read_text()
    assert "1 already done with these settings (skipped), 1 to process" in log  # the retry resumed
    assert "taking over a stale lock" in log  # of the killed job, in the same run folder
    engine = DuckBigQuery(bq)
    series = {r["ct_series_instance_uid"]: r for r in engine.rows(f"{DATASET}.series")}
    assert {u: r["status"] for u, r in series.items()} == {a.series_uid: "ok", b.series_uid: "error"}
    assert [(r["ct_series_instance_uid"], r["stage"]) for r in engine.rows(f"{DATASET}.errors")] == [
        (b.series_uid, "decode")
    ]
    assert {r["ct_series_instance_uid"] for r in engine.rows(f"{DATASET}.nodes")} == {a.series_uid}
    a_measurements = engine.count(f"{DATASET}.measurements")
    assert a_measurements > 0
    engine.close()

    # run 2: B's file is whole again; the schedule reprocesses only what has no ok row
    s3_client.upload_file(
        str(b_files[3]), BUCKET, uploaded[b.series_uid][3][0], ExtraArgs={"ACL": "public-read"}
    )
    uploaded[b.series_uid][3] = (uploaded[b.series_uid][3][0], b_files[3].stat().st_size)
    engine = DuckBigQuery(bq)
    engine.drop_table("bigquery-public-data.idc_current.dicom_all")
    _dicom_all(engine, phantoms, uploaded)
    engine.close()
    second = _run_dag(home, dags, "2026-02-01T00:00:00", conf, bq)
    assert second["state"] == "success", second
    assert second["tasks"]["reprocess"]["try_number"] == 1
    engine = DuckBigQuery(bq)
    assert [r["ct_series_instance_uid"] for r in engine.rows(f"{DATASET}.cohort_pending")] == [b.series_uid]
    series = {r["ct_series_instance_uid"]: r for r in engine.rows(f"{DATASET}.series")}
    assert {u: r["status"] for u, r in series.items()} == {a.series_uid: "ok", b.series_uid: "ok"}
    assert engine.rows(f"{DATASET}.errors") == []  # no stale error row of B
    nodes = engine.rows(f"{DATASET}.nodes")
    assert {r["ct_series_instance_uid"] for r in nodes} == {a.series_uid, b.series_uid}
    assert len(nodes) == len({(r["ct_series_instance_uid"], r["node_index"]) for r in nodes})  # no duplicates
    assert engine.count(f"{DATASET}.measurements") > a_measurements
    engine.close()
    shutil.rmtree(home, ignore_errors=True)

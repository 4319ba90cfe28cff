"""The Composer DAG, deployed as the README says, loads with Airflow's DagBag at the version Composer
runs, with the promised graph, and runs the very SQL the ``lnq`` command runs.

Airflow lives in its own virtual environment (``make airflow-venv``: Airflow 2.10.5, as in
``composer-3-airflow-2.10.5``, with the Google provider), because its pins clash with Beam's; the
project's package is not importable there, as on Composer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import queries
from beam_jobs.bigquery import cohort_sql, merge_sql
from queries.sql_text import fill_identifiers

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = Path(os.environ.get("LNQ_AIRFLOW_VENV", REPO / ".venv-airflow")) / "bin" / "python"
DATASET = "lnq-test-project.lnq_results"


def deploy(dags: Path) -> Path:
    """README "Run on Google Cloud", step 7: the DAG, and ``lnq_sql/`` beside it holding
    ``queries/sql_text.py``, ``queries/bigquery/*.sql`` and ``infra/dataflow/template.env``."""
    (dags / "lnq_sql").mkdir(parents=True)
    shutil.copy(REPO / "infra" / "composer" / "dags" / "lnq_reprocess.py", dags)
    deployed = [
        REPO / "queries" / "sql_text.py",
        *sorted((REPO / "queries" / "bigquery").glob("*.sql")),
        REPO / "infra" / "dataflow" / "template.env",
    ]
    for path in deployed:
        shutil.copy(path, dags / "lnq_sql")
    return dags


def load_dagbag(home: Path, dags: Path, **environment: str) -> dict:
    if not AIRFLOW_PYTHON.exists():
        pytest.skip(f"no Airflow environment at {AIRFLOW_PYTHON.parent.parent}; make test creates it")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),  # on sys.path, as Composer's DAG folder is
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "PYTHONPATH": "",
        **environment,
    }
    done = subprocess.run(
        [str(AIRFLOW_PYTHON), str(REPO / "tests" / "infra" / "dagbag_check.py"), str(dags)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> dict:
    dags = deploy(tmp_path_factory.mktemp("composer") / "dags")
    return load_dagbag(
        tmp_path_factory.mktemp("airflow-home"), dags, LNQ_DATASET=DATASET, LNQ_PROJECT="lnq-test-project"
    )


def test_no_import_errors(dagbag: dict) -> None:
    assert dagbag["import_errors"] == {}
    assert set(dagbag["dags"]) == {"lnq_reprocess"}


def test_task_graph(dagbag: dict) -> None:
    dag = dagbag["dags"]["lnq_reprocess"]
    down = dag["downstream"]
    assert down["select_cohort"] == ["select_pending"]
    assert down["select_pending"] == ["any_pending"]
    assert down["any_pending"] == ["export_cohort"]
    assert down["export_cohort"] == ["reprocess"]
    loads = [f"load_{t}" for t in ("errors", "measurements", "nodes", "series")]
    assert down["reprocess"] == loads
    for load in loads:
        assert down[load] == ["merge_measurements"]
    # measurements first (found through the old series rows), series last, then the check
    assert down["merge_measurements"] == ["merge_nodes"]
    assert down["merge_nodes"] == ["merge_errors"]
    assert down["merge_errors"] == ["merge_series"]
    assert down["merge_series"] == ["every_cohort_row_accounted_for"]
    assert down["every_cohort_row_accounted_for"] == []
    ops = dag["operators"]
    assert ops["reprocess"] == "DataflowStartFlexTemplateOperator"
    assert ops["every_cohort_row_accounted_for"] == "BigQueryCheckOperator"
    assert ops["any_pending"] == "ShortCircuitOperator"
    assert dag["schedule"] == "@monthly"
    assert all(n >= 1 for n in dag["retries"].values())


def test_the_dag_runs_the_sql_the_cli_runs(dagbag: dict) -> None:
    """One cohort query and one identifier helper for both: the DAG's SQL is the CLI's, to the character."""
    sql = dagbag["dags"]["lnq_reprocess"]["sql"]
    assert sql["select_cohort"] == cohort_sql()
    assert sql["select_pending"] == queries.load("bigquery/pending_series")
    for table in ("series", "nodes", "errors", "measurements"):
        assert sql[f"merge_{table}"] == merge_sql(DATASET, table)
    check = fill_identifiers(queries.load("bigquery/check_run_complete"), dataset=DATASET)
    assert sql["every_cohort_row_accounted_for"] == check
    assert not any("{" in text for text in sql.values())  # every placeholder filled


def test_the_dag_launches_the_template_make_template_writes(dagbag: dict) -> None:
    params = dagbag["dags"]["lnq_reprocess"]["params"]
    made = subprocess.run(
        ["make", "-s", "-n", "template", "PROJECT=lnq-test-project", "BUCKET=lnq-test-project-lnq-staging"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    written = re.search(r"flex-template build (gs://\S+)", made).group(1)
    assert params["template"] == written
    assert params["gpu"] == ""  # CPU workers unless asked
    assert params["worker_image"].endswith("/lnq-worker:latest")


def test_a_malformed_dataset_is_refused_at_load(tmp_path: Path) -> None:
    dags = deploy(tmp_path / "dags")
    bag = load_dagbag(tmp_path / "home", dags, LNQ_DATASET="proj.lnq`; DROP TABLE x; --")
    (error,) = bag["import_errors"].values()
    assert "is not PROJECT.DATASET" in error and bag["dags"] == {}

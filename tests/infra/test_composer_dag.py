"""The Composer DAG loads with Airflow's DagBag at the version Composer runs, with the promised graph.

Airflow lives in its own virtual environment (``make airflow-venv``: Airflow 2.10.5, as in
``composer-3-airflow-2.10.5``, with the Google provider), because its pins clash with Beam's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = Path(os.environ.get("LNQ_AIRFLOW_VENV", REPO / ".venv-airflow")) / "bin" / "python"


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not AIRFLOW_PYTHON.exists():
        pytest.skip(f"no Airflow environment at {AIRFLOW_PYTHON.parent.parent}; make test creates it")
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "PYTHONPATH": "",
    }
    done = subprocess.run(
        [
            str(AIRFLOW_PYTHON),
            str(REPO / "tests" / "infra" / "dagbag_check.py"),
            str(REPO / "infra" / "composer" / "dags"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    assert down["reprocess"] == ["load_errors", "load_nodes", "load_series"]
    for table in ("series", "nodes", "errors"):
        assert down[f"load_{table}"] == [f"merge_{table}"]
        assert down[f"merge_{table}"] == ["every_cohort_row_accounted_for"]
    assert down["every_cohort_row_accounted_for"] == []
    ops = dag["operators"]
    assert ops["reprocess"] == "DataflowStartFlexTemplateOperator"
    assert ops["every_cohort_row_accounted_for"] == "BigQueryCheckOperator"
    assert ops["any_pending"] == "ShortCircuitOperator"
    assert dag["schedule"] == "@monthly"

"""Run by the Airflow virtual environment: the Composer DAG end to end with ``dag.test()``.

The DAG is loaded from its deployed folder as Composer loads it, and run with Airflow's own
``dag.test()``. Only the two cloud services are stand-ins, at the operators' ``execute``:

- BigQuery: the DAG's own SQL (BigQuery dialect) runs on DuckDB through sqlglot
  (``tests/support/bq_duckdb.py``), query jobs with their destination table and parameters, load
  jobs from the Parquet files on the Cloud Storage emulator, extract jobs to it, check queries.
- Dataflow: the flex template launch runs ``beam_jobs/flex_main.py`` with the launch's parameters
  (checked against ``infra/dataflow/metadata.json``'s regexes, as Dataflow checks them) and
  environment, as Google's launcher passes them, on Beam's local runner. A job that fails (any exit
  but 0, or 3: some series failed, each an error row) fails the task, as a failed Dataflow job does.
  With ``LNQ_TEST_KILL_FIRST_LAUNCH`` the first try's job is killed (SIGKILL) after its first
  series, as a worker crash would end it.

Usage: ``dag_run_check.py DAGS_FOLDER LOGICAL_DATE CONF_JSON``; prints one JSON line: the run's state
and each task's state and try number.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(os.environ["LNQ_TEST_REPO"])
sys.path.insert(0, str(REPO / "tests" / "support"))  # bq_duckdb: standard library, DuckDB, sqlglot only

from airflow.exceptions import AirflowException  # noqa: E402
from airflow.models import DagBag  # noqa: E402
from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook  # noqa: E402
from airflow.providers.google.cloud.operators.bigquery import (  # noqa: E402
    BigQueryCheckOperator,
    BigQueryInsertJobOperator,
)
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator  # noqa: E402
from bq_duckdb import DuckBigQuery  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import storage  # noqa: E402

ENGINE = DuckBigQuery(os.environ["LNQ_TEST_BQ"])
GCS = storage.Client(project="test", credentials=AnonymousCredentials())
METADATA = json.loads((REPO / "infra" / "dataflow" / "metadata.json").read_text())
LAUNCHES: list[str] = []


def _table_id(ref: dict[str, str]) -> str:
    return f"{ref['projectId']}.{ref['datasetId']}.{ref['tableId']}"


def _gs(uri: str) -> tuple[storage.Bucket, str]:
    bucket, _, name = uri[len("gs://") :].partition("/")
    return GCS.bucket(bucket), name


def bigquery_job(self: BigQueryInsertJobOperator, context: Any) -> str:
    config = self.configuration
    if "query" in config:
        query = config["query"]
        params = {p["name"]: p["parameterValue"]["value"] for p in query.get("queryParameters", [])}
        default = query.get("defaultDataset")
        dataset = f"{default['projectId']}.{default['datasetId']}" if default else None
        sql = query["query"]
        if "destinationTable" in query:
            assert query.get("writeDisposition") == "WRITE_TRUNCATE", query
            destination = _table_id(query["destinationTable"])
            ENGINE.query(sql, params, default_dataset=dataset, into=destination)
        else:
            ENGINE.query(sql, params, default_dataset=dataset)
    elif "load" in config:
        load = config["load"]
        assert load["sourceFormat"] == "PARQUET" and load["writeDisposition"] == "WRITE_TRUNCATE", load
        local = []
        folder = Path(tempfile.mkdtemp(prefix="bq-load-"))
        for uri in load["sourceUris"]:
            bucket, pattern = _gs(uri)
            prefix = pattern.split("*", 1)[0]
            for blob in GCS.list_blobs(bucket, prefix=prefix):
                if re.fullmatch(re.escape(pattern).replace(r"\*", "[^/]*"), blob.name):
                    local.append(folder / f"{len(local)}.parquet")
                    blob.download_to_filename(local[-1])
        if not local:
            raise AirflowException(f"load: no file matches {load['sourceUris']}")
        ENGINE.load_parquet(_table_id(load["destinationTable"]), local)
    elif "extract" in config:
        extract = config["extract"]
        assert extract["destinationFormat"] == "PARQUET", extract
        (uri,) = extract["destinationUris"]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "extract.parquet"
            ENGINE.extract_parquet(_table_id(extract["sourceTable"]), path)
            bucket, name = _gs(uri)
            bucket.blob(name).upload_from_filename(str(path))
    else:
        raise AirflowException(f"unknown job configuration {sorted(config)}")
    return "job-standin"


def check_query(self: BigQueryCheckOperator, context: Any) -> None:
    rows = ENGINE.query(self.sql)
    if not rows or not all(rows[0].values()):
        raise AirflowException(f"Test failed.\nQuery:\n{self.sql}\nResults:\n{rows}")


def get_records(self: BigQueryHook, sql: str, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in ENGINE.query(sql)]


def launch_flex_template(self: DataflowStartFlexTemplateOperator, context: Any) -> dict[str, Any]:
    launch = self.body["launchParameter"]
    job_name = launch["jobName"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job_name):
        raise AirflowException(f"Dataflow refuses the job name {job_name!r}")
    regexes = {p["name"]: p.get("regexes", []) for p in METADATA["parameters"]}
    for name, value in launch["parameters"].items():
        if name not in regexes:
            raise AirflowException(f"the template has no parameter {name!r}")
        for regex in regexes[name]:
            if not re.fullmatch(regex, value):
                raise AirflowException(f"parameter {name}={value!r} does not match {regex}")
    environment = launch["environment"]
    argv = [f"--{k}={v}" for k, v in launch["parameters"].items()]
    argv += [
        f"--sdk_container_image={environment['sdkContainerImage']}",
        f"--service_account_email={environment['serviceAccountEmail']}",
        f"--temp_location={environment['tempLocation']}",
        f"--staging_location={environment['stagingLocation']}",
        f"--project={self.project_id}",
        f"--region={self.location}",
        f"--job_name={job_name}",
        "--runner=FnApiRunner",  # Dataflow's place: the same file, the same parameters, run here
    ]
    LAUNCHES.append(job_name)
    kill = os.environ.get("LNQ_TEST_KILL_FIRST_LAUNCH") and len(LAUNCHES) == 1
    proc = subprocess.Popen(
        [os.environ["LNQ_TEST_PYTHON"], str(REPO / "beam_jobs" / "flex_main.py"), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if kill and line.split(" series ", 1)[0].endswith("[1/2]"):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker crash: the job ends without its last step
            break
    proc.wait()
    log = "".join(lines)
    print(log, file=sys.stderr)
    if proc.returncode not in (0, 3):  # 3: some series failed, each an error row; the job itself succeeded
        raise AirflowException(f"Dataflow job {job_name} failed (exit {proc.returncode}): {log[-500:]}")
    return {"id": job_name, "currentState": "JOB_STATE_DONE"}


def main() -> None:
    dags, logical_date, conf = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    from airflow.utils import db

    db.initdb()
    BigQueryInsertJobOperator.execute = bigquery_job
    BigQueryCheckOperator.execute = check_query
    BigQueryHook.get_records = get_records
    DataflowStartFlexTemplateOperator.execute = launch_flex_template
    bag = DagBag(dag_folder=dags, include_examples=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["lnq_reprocess"]
    when = datetime.fromisoformat(logical_date).replace(tzinfo=timezone.utc)
    run = dag.test(execution_date=when, run_conf=conf)
    tasks = {
        ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in run.get_task_instances()
    }
    ENGINE.close()
    print(json.dumps({"state": str(run.state), "tasks": tasks, "launches": LAUNCHES}))


if __name__ == "__main__":
    main()

"""Scheduled LNQ reprocessing on Cloud Composer.

Once a month (and on demand): select the LNQ cohort from IDC's current release, keep the series
that have no 'ok' result for the configured model (new IDC series, a new model version, earlier
failures), export them as a cohort, run the Dataflow flex template on them (the job publishes its
tables as its last step), load the results into BigQuery (staging, then replace every row of the
run's series and model in each table), and check that every cohort row is accounted for. Nothing
pending: the run stops after the count.

One DAG run writes one run folder, ``gs://RESULTS/runs/<logical date>``: the same for every try of
its tasks, so a retried launch resumes the series its first try finished (the output's lock, held by
a failed job, goes stale when its workers stop) and the loads read the folder the job wrote.

Configuration comes from the environment variables Terraform sets on the Composer environment
(``LNQ_PROJECT``, ``LNQ_REGION``, ``LNQ_RESULTS_BUCKET``, ``LNQ_STAGING_BUCKET``, ``LNQ_TEMP_BUCKET``,
``LNQ_DATASET``, ``LNQ_SERVICE_ACCOUNT``, ``LNQ_WORKER_IMAGE``) and from DAG params (model, GPU,
template, worker image). The SQL is the project's own, deployed beside this file as ``lnq_sql/``:
``queries/bigquery/*.sql``, ``queries/sql_text.py`` (the one helper, standard library only, that fills
table identifiers and builds the cohort query, as the ``lnq`` command does) and
``infra/dataflow/template.env`` (where ``make template`` writes the template) (README "Run on Google
Cloud", step 7).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path

from airflow import DAG
from airflow.models.param import Param
from airflow.operators.python import ShortCircuitOperator
from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
from airflow.providers.google.cloud.operators.bigquery import BigQueryCheckOperator, BigQueryInsertJobOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
from lnq_sql.sql_text import bigquery_cohort_sql, dataset_id, fill_identifiers

PROJECT = os.environ.get("LNQ_PROJECT", "my-project")
REGION = os.environ.get("LNQ_REGION", "us-central1")
RESULTS_BUCKET = os.environ.get("LNQ_RESULTS_BUCKET", f"{PROJECT}-lnq-results")
STAGING_BUCKET = os.environ.get("LNQ_STAGING_BUCKET", f"{PROJECT}-lnq-staging")
TEMP_BUCKET = os.environ.get("LNQ_TEMP_BUCKET", f"{PROJECT}-lnq-temp")
DATASET = dataset_id(os.environ.get("LNQ_DATASET", f"{PROJECT}.lnq_results"))
SERVICE_ACCOUNT = os.environ.get("LNQ_SERVICE_ACCOUNT", f"lnq-pipeline@{PROJECT}.iam.gserviceaccount.com")
WORKER_IMAGE = os.environ.get("LNQ_WORKER_IMAGE", f"{REGION}-docker.pkg.dev/{PROJECT}/lnq/lnq-worker:latest")
RETRY_DELAY = timedelta(seconds=float(os.environ.get("LNQ_RETRY_DELAY_S", "900")))
"""Longer than the lock's stale time (10 minutes without a worker heartbeat): a retry of a failed
launch finds the failed job's lock stale and takes it over."""
TABLES = ("series", "nodes", "errors", "measurements")
MERGE_ORDER = ("measurements", "nodes", "errors", "series")
"""As ``lnq load-bigquery`` merges (beam_jobs/bigquery.py): measurements find the SRs they replace
through the series rows the last merge replaces."""
RUN = "runs/{{ ts_nodash }}"
"""One folder per DAG run (its logical date), stable across task retries."""

LNQ_SQL = Path(__file__).resolve().parent / "lnq_sql"


def _read(name: str) -> str:
    """The text of ``lnq_sql/<name>.sql`` (``queries/bigquery/<name>.sql``, deployed beside the DAG)."""
    path = LNQ_SQL / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: see README 'Run on Google Cloud', step 7")
    return path.read_text(encoding="utf-8")


def _template_object() -> str:
    """Where ``make template`` writes the flex template in the staging bucket (``template.env``)."""
    path = LNQ_SQL / "template.env"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: see README 'Run on Google Cloud', step 7")
    found = re.search(r"^LNQ_TEMPLATE_OBJECT=(\S+)$", path.read_text(encoding="utf-8"), re.M)
    if found is None:
        raise ValueError(f"{path} names no LNQ_TEMPLATE_OBJECT")
    return found.group(1)


def _sql(name: str, **identifiers: str) -> str:
    """``lnq_sql/<name>.sql`` with its ``{identifier}`` placeholders (table ids, which cannot be
    bound) filled in by the project's one helper, which validates them first."""
    return fill_identifiers(_read(name), **identifiers)


def merge_sql(table: str) -> str:
    """The reload of ``table``, keyed by the run's series (``series_staging``), as the CLI's."""
    ids = {
        "target": f"{DATASET}.{table}",
        "staging": f"{DATASET}.{table}_staging",
        "keys": f"{DATASET}.series_staging",
    }
    if table == "measurements":
        return _sql("merge_measurements", series=f"{DATASET}.series", **ids)
    return _sql("merge_results", **ids)


DEFAULT_DATASET = dict(zip(("projectId", "datasetId"), DATASET.split("."), strict=True))


def _table(name: str) -> dict[str, str]:
    return {**DEFAULT_DATASET, "tableId": name}


def _string_param(name: str, value: str) -> dict:
    return {"name": name, "parameterType": {"type": "STRING"}, "parameterValue": {"value": value}}


def _count_pending() -> bool:
    sql = fill_identifiers("SELECT COUNT(*) FROM `{pending}`", pending=f"{DATASET}.cohort_pending")
    rows = BigQueryHook(use_legacy_sql=False).get_records(sql)
    return bool(rows and rows[0][0])


with DAG(
    dag_id="lnq_reprocess",
    description="Reprocess LNQ series not yet processed with the configured model; load into BigQuery.",
    schedule="@monthly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": RETRY_DELAY},
    params={
        "model": Param(
            "reference",
            type="string",
            description="lnq --model: reference, nnunet:gs://..., torchscript:gs://...",
        ),
        "annotation": Param("all", enum=["all", "full", "partial"]),
        "gpu": Param(
            "", type="string", description="TYPE[:COUNT] per worker, e.g. nvidia-l4:1; empty for CPU workers"
        ),
        "template": Param(f"gs://{STAGING_BUCKET}/{_template_object()}", type="string"),
        "worker_image": Param(WORKER_IMAGE, type="string", description="the image `make image` pushed"),
        "s3_endpoint": Param(
            "", type="string", description="where workers read IDC's buckets; empty: IDC's Google Cloud copy"
        ),
    },
    tags=["lnq", "idc", "dataflow"],
) as dag:
    select_cohort = BigQueryInsertJobOperator(
        task_id="select_cohort",
        project_id=PROJECT,
        configuration={
            "query": {
                "query": bigquery_cohort_sql(_read),
                "useLegacySql": False,
                "destinationTable": _table("cohort_all"),
                "writeDisposition": "WRITE_TRUNCATE",
                "parameterMode": "NAMED",
                "queryParameters": [
                    _string_param("collection_id", "mediastinal_lymph_node_seg"),
                    _string_param("annotation", "{{ params.annotation }}"),
                ],
            }
        },
    )

    select_pending = BigQueryInsertJobOperator(
        task_id="select_pending",
        project_id=PROJECT,
        configuration={
            "query": {
                "query": _sql("pending_series"),
                "useLegacySql": False,
                "defaultDataset": DEFAULT_DATASET,
                "destinationTable": _table("cohort_pending"),
                "writeDisposition": "WRITE_TRUNCATE",
                "parameterMode": "NAMED",
                "queryParameters": [_string_param("model", "{{ params.model }}")],
            }
        },
    )

    any_pending = ShortCircuitOperator(task_id="any_pending", python_callable=_count_pending)

    export_cohort = BigQueryInsertJobOperator(
        task_id="export_cohort",
        project_id=PROJECT,
        configuration={
            "extract": {
                "sourceTable": _table("cohort_pending"),
                "destinationUris": [f"gs://{RESULTS_BUCKET}/{RUN}/cohort.parquet"],
                "destinationFormat": "PARQUET",
            }
        },
    )

    reprocess = DataflowStartFlexTemplateOperator(
        task_id="reprocess",
        project_id=PROJECT,
        location=REGION,
        wait_until_finished=True,
        body={
            "launchParameter": {
                "jobName": "lnq-{{ ts_nodash | lower }}-{{ ti.try_number }}",
                "containerSpecGcsPath": "{{ params.template }}",
                "parameters": {
                    "cohort": f"gs://{RESULTS_BUCKET}/{RUN}/cohort.parquet",
                    "output": f"gs://{RESULTS_BUCKET}/{RUN}",
                    "model": "{{ params.model }}",
                    "gpu": "{{ params.gpu }}",
                    "s3_endpoint": "{{ params.s3_endpoint }}",
                },
                "environment": {
                    "sdkContainerImage": "{{ params.worker_image }}",
                    "serviceAccountEmail": SERVICE_ACCOUNT,
                    "tempLocation": f"gs://{TEMP_BUCKET}/tmp",
                    "stagingLocation": f"gs://{STAGING_BUCKET}/staging",
                },
            }
        },
    )

    check = BigQueryCheckOperator(
        task_id="every_cohort_row_accounted_for",
        sql=_sql("check_run_complete", dataset=DATASET),
        use_legacy_sql=False,
    )

    loads = [
        BigQueryInsertJobOperator(
            task_id=f"load_{table}",
            project_id=PROJECT,
            configuration={
                "load": {
                    "sourceUris": [f"gs://{RESULTS_BUCKET}/{RUN}/{table}/*.parquet"],
                    "sourceFormat": "PARQUET",
                    "destinationTable": _table(f"{table}_staging"),
                    "writeDisposition": "WRITE_TRUNCATE",
                }
            },
        )
        for table in TABLES
    ]
    merges = [
        BigQueryInsertJobOperator(
            task_id=f"merge_{table}",
            project_id=PROJECT,
            configuration={"query": {"query": merge_sql(table), "useLegacySql": False}},
        )
        for table in MERGE_ORDER
    ]
    reprocess >> loads >> merges[0]
    for before, after in zip(merges, merges[1:], strict=False):
        before >> after
    merges[-1] >> check

    select_cohort >> select_pending >> any_pending >> export_cohort >> reprocess

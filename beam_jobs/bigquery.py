"""BigQuery at its boundary: the cohort query and loading a run's Parquet into tables.

The client calls are kept thin so that tests can fake the client; the SQL lives
in ``queries/bigquery/`` with parameters bound by the client, and table identifiers are filled in
by ``queries/sql_text.py`` only (the Composer DAG uses the same file).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import pyarrow as pa

import queries
from pipeline.cohort.query import ANNOTATION_CHOICES, LNQ_COLLECTION, cohort_table
from pipeline.errors import CohortError
from pipeline.outputs.analytics import analytics_sql
from pipeline.outputs.schemas import TABLES
from queries.sql_text import bigquery_cohort_sql, dataset_id, fill_identifiers

logger = logging.getLogger(__name__)

_BQ_TYPES = {
    pa.string(): "STRING",
    pa.int64(): "INT64",
    pa.float64(): "FLOAT64",
    pa.timestamp("us", tz="UTC"): "TIMESTAMP",
}
# How each results table is laid out: partition series by day, cluster by what queries filter on.
LAYOUT: dict[str, dict[str, Any]] = {
    "series": {"partition_field": "processed_at", "clustering": ["model", "status", "patient_id"]},
    "nodes": {"partition_field": None, "clustering": ["model", "source", "patient_id"]},
    "errors": {"partition_field": None, "clustering": ["model", "stage"]},
}


def cohort_job_config(*, annotation: str, collection_id: str = LNQ_COLLECTION):  # type: ignore[no-untyped-def]
    from google.cloud import bigquery

    return bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("collection_id", "STRING", collection_id),
            bigquery.ScalarQueryParameter("annotation", "STRING", annotation),
        ]
    )


def select_cohort_bigquery(
    client: Any, *, annotation: str = "all", limit: int | None = None, collection_id: str = LNQ_COLLECTION
) -> pa.Table:
    """Run ``queries/bigquery/lnq_cohort.sql`` over the series index that ``idc_series_index.sql``
    builds from ``dicom_all``; rows come back in the same schema as idc-index's."""
    if annotation not in ANNOTATION_CHOICES:
        raise CohortError(f"annotation {annotation!r} is not one of {ANNOTATION_CHOICES}")
    job = client.query(
        cohort_sql(),
        job_config=cohort_job_config(annotation=annotation, collection_id=collection_id),
    )
    frame = pd.DataFrame([dict(row.items()) for row in job.result()], columns=list(_cohort_columns()))
    if limit is not None:
        frame = frame.head(limit)
    return cohort_table(frame)


def cohort_sql() -> str:
    """The cohort query as BigQuery runs it (the same text the Composer DAG runs)."""
    return bigquery_cohort_sql(lambda name: queries.load(f"bigquery/{name}"))


def _cohort_columns() -> list[str]:
    from pipeline.outputs.schemas import COHORT_SCHEMA

    return COHORT_SCHEMA.names


def bigquery_schema(table: str) -> list[Any]:
    """BigQuery SchemaFields from the table's pyarrow schema (one declaration of each table)."""
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(f.name, _BQ_TYPES[f.type], mode="NULLABLE" if f.nullable else "REQUIRED")
        for f in TABLES[table]
    ]


def check_dataset(dataset: str) -> str:
    """``dataset`` if it is ``PROJECT.DATASET`` (``queries.sql_text.dataset_id``); a ValueError otherwise."""
    return dataset_id(dataset)


def load_results(client: Any, *, output: str, dataset: str) -> dict[str, int]:
    """Load a run's tables from ``output`` (gs://) into ``dataset``; a rerun replaces its rows.

    Each table is loaded into ``<table>_staging`` (truncated), then a script deletes the
    target's rows for the same series and model and inserts the staged ones. Target
    tables are created when missing, partitioned and clustered as in ``LAYOUT``.
    """
    from google.cloud import bigquery

    check_dataset(dataset)
    if not output.startswith("gs://"):
        raise ValueError(f"--output {output!r}: BigQuery loads from Cloud Storage (gs://...)")
    loaded = {}
    for table in TABLES:
        target, staging = f"{dataset}.{table}", f"{dataset}.{table}_staging"
        client.create_table(_table_definition(target, table), exists_ok=True)
        job = client.load_table_from_uri(
            f"{output.rstrip('/')}/{table}/*.parquet",
            staging,
            job_config=bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET,
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                schema=bigquery_schema(table),
            ),
        )
        job.result()
        client.query(merge_sql(target, staging)).result()
        loaded[table] = int(client.get_table(staging).num_rows)
        logger.info("loaded %d rows into %s", loaded[table], target)
    return loaded


def merge_sql(target: str, staging: str) -> str:
    """``merge_results.sql`` for two ``PROJECT.DATASET.TABLE`` ids (validated, then filled in)."""
    return fill_identifiers(queries.load("bigquery/merge_results"), target=target, staging=staging)


def _table_definition(table_id: str, table: str) -> Any:
    from google.cloud import bigquery

    definition = bigquery.Table(table_id, schema=bigquery_schema(table))
    layout = LAYOUT[table]
    if layout["partition_field"]:
        definition.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=layout["partition_field"]
        )
    definition.clustering_fields = layout["clustering"]
    return definition


def run_analytics_bigquery(client: Any, *, dataset: str, name: str) -> pa.Table:
    """The same analytics query on BigQuery, with the results dataset as the default dataset."""
    from google.cloud import bigquery

    sql = analytics_sql(name)  # an unknown name is refused before anything else
    check_dataset(dataset)
    job = client.query(
        sql,
        job_config=bigquery.QueryJobConfig(default_dataset=dataset),
    )
    return pa.Table.from_pylist([dict(r.items()) for r in job.result()])

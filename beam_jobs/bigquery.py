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
from pipeline.cohort.query import LNQ_COLLECTION, cohort_table
from pipeline.enums import ANNOTATION_CHOICES
from pipeline.errors import CohortError
from pipeline.locations import is_gcs
from pipeline.outputs.analytics import analytics_sql
from pipeline.outputs.layout import OutputLayout
from pipeline.outputs.schemas import TABLE_LAYOUT, TABLES
from queries.sql_text import bigquery_cohort_sql, dataset_id, fill_identifiers

logger = logging.getLogger(__name__)

_BQ_TYPES = {
    pa.string(): "STRING",
    pa.int64(): "INT64",
    pa.float64(): "FLOAT64",
    pa.timestamp("us", tz="UTC"): "TIMESTAMP",
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
    """BigQuery SchemaFields from the table's pyarrow schema (one declaration of each table); struct
    columns (the measurements' codes) become RECORDs."""
    from google.cloud import bigquery

    def field(f: pa.Field) -> Any:
        mode = "NULLABLE" if f.nullable else "REQUIRED"
        if pa.types.is_struct(f.type):
            return bigquery.SchemaField(f.name, "RECORD", mode=mode, fields=[field(c) for c in f.type])
        return bigquery.SchemaField(f.name, _BQ_TYPES[f.type], mode=mode)

    return [field(f) for f in TABLES[table]]


def terraform_schema(table: str) -> list[dict[str, Any]]:
    """The table's schema in BigQuery's JSON form, as Terraform declares it (``schema = file(...)``)."""

    def as_json(field: Any) -> dict[str, Any]:
        out = {"name": field.name, "type": field.field_type, "mode": field.mode}
        if field.fields:
            out["fields"] = [as_json(f) for f in field.fields]
        return out

    return [as_json(f) for f in bigquery_schema(table)]


def write_terraform_schemas(folder: str) -> None:
    """``make schemas``: write ``<folder>/<table>.json`` for every table and ``<folder>/layout.json``
    (each table's partitioning and clustering), from the one declaration of the tables."""
    import json
    import os

    for name, content in [*((t, terraform_schema(t)) for t in TABLES), ("layout", TABLE_LAYOUT)]:
        with open(os.path.join(folder, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
            f.write("\n")


def check_dataset(dataset: str) -> str:
    """``dataset`` if it is ``PROJECT.DATASET`` (``queries.sql_text.dataset_id``); a ValueError otherwise."""
    return dataset_id(dataset)


def make_client(project: str, *, location: str | None = None, what: str) -> Any:
    """A BigQuery client for ``project``, made only after the project id's shape and the
    credentials are checked: a mistake is one line (exit 2) naming the fix, not a client's
    traceback."""
    from google.cloud import bigquery

    from beam_jobs.credentials import check_project, prepare_credentials

    check_project(project)
    prepare_credentials(what=what, for_beam=False)
    return bigquery.Client(project=project, location=location)


MERGE_ORDER = ("measurements", "nodes", "errors", "series")
"""The reload's merges, in order: ``measurements`` first, because it finds the SRs it replaces through
the ``series`` rows the last merge replaces."""


def load_results(client: Any, *, output: str, dataset: str) -> dict[str, int]:
    """Load a run's tables from ``output`` (gs://) into ``dataset``; a reload replaces every row of
    each reloaded (series, model).

    Each table is loaded into ``<table>_staging`` (truncated). Then, keyed by the run's series (the
    rows of ``series_staging``, not each staging table's own rows, so that an error row left by an
    earlier failure, or nodes of an earlier result, go too), each target table's rows of those
    (series, model) are deleted and the staged ones inserted (``queries/bigquery/merge_*.sql``, the
    SQL the Composer DAG runs). Target tables are created when missing, partitioned and clustered
    as in ``TABLE_LAYOUT`` (Terraform declares the same, from the same declaration).
    """
    check_dataset(dataset)
    if not is_gcs(output):
        raise ValueError(f"--output {output!r}: BigQuery loads from Cloud Storage (gs://...)")
    output = output.rstrip("/")
    loaded = {}
    for table in TABLES:
        target, staging = f"{dataset}.{table}", f"{dataset}.{table}_staging"
        client.create_table(_table_definition(target, table), exists_ok=True)
        loaded[table] = _load(
            client, OutputLayout(output).table_files(table), staging, bigquery_schema(table)
        )
    for table in MERGE_ORDER:
        client.query(merge_sql(dataset, table)).result()
        logger.info("replaced the run's rows of %s.%s (%d staged)", dataset, table, loaded[table])
    return loaded


def _load(client: Any, uri: str, staging: str, schema: list[Any]) -> int:
    """Load Parquet files into a truncated staging table; its row count."""
    from google.cloud import bigquery

    client.load_table_from_uri(
        uri,
        staging,
        job_config=bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            schema=schema,
        ),
    ).result()
    return int(client.get_table(staging).num_rows)


def merge_sql(dataset: str, table: str) -> str:
    """The merge of ``table`` from its staging copy into ``PROJECT.DATASET.table``, keyed by the run's
    series (``series_staging``); identifiers validated, then filled in."""
    keys = {
        "target": f"{dataset}.{table}",
        "staging": f"{dataset}.{table}_staging",
        "keys": f"{dataset}.series_staging",
    }
    if table == "measurements":
        return fill_identifiers(
            queries.load("bigquery/merge_measurements"), series=f"{dataset}.series", **keys
        )
    return fill_identifiers(queries.load("bigquery/merge_results"), **keys)


def _table_definition(table_id: str, table: str) -> Any:
    from google.cloud import bigquery

    definition = bigquery.Table(table_id, schema=bigquery_schema(table))
    layout = TABLE_LAYOUT[table]
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

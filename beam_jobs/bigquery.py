"""BigQuery at its boundary: the cohort query and loading a run's Parquet into tables.

The client calls are kept thin so that tests can fake the client; the SQL lives
in ``queries/bigquery/`` with parameters bound by the client, and table identifiers are filled in
by ``queries/sql_text.py`` only (the Composer DAG uses the same file).
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

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


def make_client(project: str, *, location: str | None = None, what: str) -> Any:
    """A BigQuery client for ``project``, made only after the project id's shape and the
    credentials are checked: a mistake is one line (exit 2) naming the fix, not a client's
    traceback."""
    from google.cloud import bigquery

    from beam_jobs.credentials import check_project, prepare_credentials

    check_project(project)
    prepare_credentials(what=what, for_beam=False)
    return bigquery.Client(project=project, location=location)


MEASUREMENTS = "measurements"


def write_measurements(output: str) -> tuple[str, int]:
    """Flatten the SR of every published ``ok`` series into ``OUTPUT/measurements/`` (one Parquet
    file in the column shape of IDC's ``quantitative_measurements`` view; see
    ``pipeline/dicom/sr_rows.py`` for the mapping). Returns the file and its row count."""
    import pydicom

    from beam_jobs.publish import TABLE_FILE, add_to_manifest, read_table
    from beam_jobs.store import write_atomically
    from pipeline.dicom.sr_rows import quantitative_measurement_rows, quantitative_measurements_table

    output = output.rstrip("/")
    rows: list[dict[str, Any]] = []
    for series in read_table(output, "series").to_pylist():
        if series["status"] != "ok" or not series["sr_uri"]:
            continue
        with FileSystems.open(f"{output}/sr/{series['ct_series_instance_uid']}.dcm") as f:
            rows.extend(quantitative_measurement_rows(pydicom.dcmread(io.BytesIO(f.read()))))
    buffer = io.BytesIO()
    pq.write_table(quantitative_measurements_table(rows), buffer)
    path = f"{output}/{MEASUREMENTS}/{TABLE_FILE}"
    write_atomically(path, buffer.getvalue())
    add_to_manifest(output, [path])
    return path, len(rows)


def measurements_schema() -> list[Any]:
    """BigQuery fields of the measurements table, code columns as RECORDs, from its Arrow schema."""
    from google.cloud import bigquery

    from pipeline.dicom.sr_rows import QUANTITATIVE_MEASUREMENTS_SCHEMA

    def field(f: pa.Field) -> Any:
        mode = "NULLABLE" if f.nullable else "REQUIRED"
        if pa.types.is_struct(f.type):
            return bigquery.SchemaField(f.name, "RECORD", mode=mode, fields=[field(c) for c in f.type])
        return bigquery.SchemaField(f.name, _BQ_TYPES[f.type], mode=mode)

    return [field(f) for f in QUANTITATIVE_MEASUREMENTS_SCHEMA]


def load_results(client: Any, *, output: str, dataset: str, measurements: bool = True) -> dict[str, int]:
    """Load a run's tables from ``output`` (gs://) into ``dataset``; a rerun replaces its rows.

    Each table is loaded into ``<table>_staging`` (truncated), then a script deletes the
    target's rows for the same series and model and inserts the staged ones. Target
    tables are created when missing, partitioned and clustered as in ``LAYOUT``. With
    ``measurements``, the run's SRs are flattened into ``OUTPUT/measurements/`` first and loaded
    as the ``measurements`` table (IDC's ``quantitative_measurements`` shape, replaced by SR).
    """
    check_dataset(dataset)
    if not output.startswith("gs://"):
        raise ValueError(f"--output {output!r}: BigQuery loads from Cloud Storage (gs://...)")
    output = output.rstrip("/")
    loaded = {}
    for table in TABLES:
        target, staging = f"{dataset}.{table}", f"{dataset}.{table}_staging"
        client.create_table(_table_definition(target, table), exists_ok=True)
        loaded[table] = _load(client, f"{output}/{table}/*.parquet", staging, bigquery_schema(table))
        client.query(merge_sql(target, staging)).result()
        logger.info("loaded %d rows into %s", loaded[table], target)
    if measurements:
        write_measurements(output)
        target, staging = f"{dataset}.{MEASUREMENTS}", f"{dataset}.{MEASUREMENTS}_staging"
        client.create_table(_measurements_definition(target), exists_ok=True)
        loaded[MEASUREMENTS] = _load(
            client, f"{output}/{MEASUREMENTS}/*.parquet", staging, measurements_schema()
        )
        client.query(
            fill_identifiers(queries.load("bigquery/merge_measurements"), target=target, staging=staging)
        ).result()
        logger.info("loaded %d rows into %s", loaded[MEASUREMENTS], target)
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


def _measurements_definition(table_id: str) -> Any:
    from google.cloud import bigquery

    definition = bigquery.Table(table_id, schema=measurements_schema())
    definition.clustering_fields = ["sourceSegmentedSeriesUID", "trackingUniqueIdentifier"]
    return definition


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

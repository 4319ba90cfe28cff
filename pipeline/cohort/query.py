"""Select the LNQ cohort from idc-index's bundled index, offline, with DuckDB.

The cohort query is written once, in BigQuery's dialect (``queries/bigquery/lnq_cohort.sql``), and
translated to DuckDB's with sqlglot; here it reads idc-index's series index. On BigQuery the same
query reads that index built from ``dicom_all`` (``beam_jobs.bigquery.select_cohort_bigquery``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa

import queries
from pipeline.enums import ANNOTATION_CHOICES
from pipeline.errors import CohortError
from pipeline.outputs.schemas import COHORT_SCHEMA
from queries.sql_text import SERIES_RELATION

LNQ_COLLECTION = "mediastinal_lymph_node_seg"


def bundled_index_path() -> str:
    """The Parquet file of IDC's series index shipped inside the idc-index-data wheel."""
    import idc_index_data

    return str(idc_index_data.IDC_INDEX_PARQUET_FILEPATH)


def select_cohort(
    *,
    annotation: str = "all",
    limit: int | None = None,
    collection_id: str = LNQ_COLLECTION,
    index_path: str | None = None,
) -> pa.Table:
    """Run ``queries/bigquery/lnq_cohort.sql`` (translated to DuckDB) over idc-index's series index
    and return rows in the cohort schema."""
    if annotation not in ANNOTATION_CHOICES:
        raise CohortError(f"annotation {annotation!r} is not one of {ANNOTATION_CHOICES}")
    if limit is not None and limit < 1:
        raise CohortError(f"limit {limit} must be a positive number of series")
    import duckdb  # only cohort selection needs it; workers never do

    sql = queries.load_duckdb("bigquery/lnq_cohort")
    con = duckdb.connect()
    try:
        con.read_parquet(index_path or bundled_index_path()).create_view(SERIES_RELATION)
        params: dict[str, Any] = {"collection_id": collection_id, "annotation": annotation}
        frame = con.execute(sql, params).df()
    finally:
        con.close()
    if limit is not None:
        frame = frame.head(limit)
    return cohort_table(frame)


def cohort_table(frame: pd.DataFrame) -> pa.Table:
    """A cohort DataFrame cast to the cohort schema; duplicate CT series are refused."""
    duplicated = frame["ct_series_instance_uid"][frame["ct_series_instance_uid"].duplicated()]
    if len(duplicated):
        raise CohortError(
            f"{len(duplicated)} CT series appear more than once in the cohort, "
            f"for example {duplicated.iloc[0]}"
        )
    return pa.Table.from_pandas(frame[COHORT_SCHEMA.names], schema=COHORT_SCHEMA, preserve_index=False)

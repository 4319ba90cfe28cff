"""SQL files, one query per file, all in BigQuery's dialect; parameters are bound by the client,
never formatted in.

``bigquery/`` holds the cohort query (``lnq_cohort.sql`` over a series-level relation with
idc-index's column names, and ``idc_series_index.sql``, that relation built from IDC's ``dicom_all``)
and the scheduling SQL; ``analytics/`` the queries on a run's tables. The cohort and analytics
queries also run offline on DuckDB, translated with sqlglot (:func:`load_duckdb`). Table
identifiers, which cannot be bound, are filled in by :mod:`queries.sql_text` only.
"""

from __future__ import annotations

from importlib import resources


def load(name: str) -> str:
    """The text of ``queries/<name>.sql``, for example ``load("bigquery/lnq_cohort")``."""
    return resources.files(__name__).joinpath(f"{name}.sql").read_text(encoding="utf-8")


def load_duckdb(name: str) -> str:
    """``queries/<name>.sql`` translated from BigQuery's dialect to DuckDB's with sqlglot
    (``@parameter`` becomes DuckDB's ``$parameter``, still bound by the client)."""
    import sqlglot

    (statement,) = sqlglot.transpile(load(name), read="bigquery", write="duckdb")
    return statement

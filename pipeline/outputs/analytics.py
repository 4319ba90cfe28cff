"""Run the BigQuery analytics queries locally: DuckDB over a run's Parquet output.

The SQL in ``queries/analytics/`` is written once, in BigQuery's dialect, and
translated to DuckDB's with sqlglot; ``series``, ``nodes`` and ``errors`` are
views over ``OUTPUT/<table>/*.parquet``.
"""

from __future__ import annotations

import os
from importlib import resources

import pyarrow as pa

import queries
from pipeline.outputs.schemas import TABLES


def available_queries() -> list[str]:
    folder = resources.files(queries).joinpath("analytics")
    return sorted(p.name[: -len(".sql")] for p in folder.iterdir() if p.name.endswith(".sql"))


def duckdb_sql(name: str) -> str:
    """The analytics query ``name`` translated from BigQuery's dialect to DuckDB's."""
    import sqlglot

    if name not in available_queries():
        raise ValueError(f"no analytics query {name!r}; available: {available_queries()}")
    (statement,) = sqlglot.transpile(queries.load(f"analytics/{name}"), read="bigquery", write="duckdb")
    return statement


def run_query(output: str, name: str) -> pa.Table:
    """Run analytics query ``name`` on the run in folder ``output``."""
    import duckdb

    sql = duckdb_sql(name)
    con = duckdb.connect()
    try:
        for table in TABLES:
            pattern = os.path.join(output, table, "*.parquet")
            if not any(f.endswith(".parquet") for f in _listdir(os.path.join(output, table))):
                raise FileNotFoundError(
                    f"{output} has no {table}/ Parquet files; is it a run's output folder?"
                )
            con.read_parquet(pattern).create_view(table)
        result = con.execute(sql)
        # duckdb 1.5 renamed fetch_arrow_table (now deprecated) to to_arrow_table
        fetch = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
        return fetch()
    finally:
        con.close()


def _listdir(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []

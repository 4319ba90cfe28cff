"""BigQuery's statements played by DuckDB, for offline tests of the project's BigQuery SQL.

The SQL is the project's own, in BigQuery's dialect, translated by sqlglot (as the analytics
queries are for DuckDB); tables ``PROJECT.DATASET.TABLE`` live in one DuckDB database file per
project under a folder, so that several processes (the Composer DAG's tasks, a test) see the same
tables. Target tables are created from Terraform's JSON schemas (``infra/terraform/schemas``), as
Terraform creates them. This proves the statements' shape and their effect on rows, not BigQuery's
own semantics (DOMAIN.md, "Offline stand-ins").

Standard library, DuckDB and sqlglot only: the Airflow environment imports it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import sqlglot

_TYPES = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "FLOAT64": "DOUBLE",
    "TIMESTAMP": "TIMESTAMPTZ",
    "BOOL": "BOOLEAN",
}
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def duckdb_type(field: dict[str, Any]) -> str:
    """The DuckDB type of one field of a BigQuery JSON schema (RECORDs become STRUCTs)."""
    if field["type"] == "RECORD":
        inner = ", ".join(f'"{f["name"]}" {duckdb_type(f)}' for f in field["fields"])
        return f"STRUCT({inner})"
    return _TYPES[field["type"]]


class DuckBigQuery:
    """One connection over ``folder``: a DuckDB file per Google Cloud project."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect()
        self._attached: set[str] = set()

    def close(self) -> None:
        self.con.close()

    def _ident(self, table_id: str) -> str:
        project, dataset, table = table_id.split(".")
        self._dataset(project, dataset)
        return f'"{project}"."{dataset}"."{table}"'

    def _dataset(self, project: str, dataset: str) -> None:
        if not (_NAME.fullmatch(project) and _NAME.fullmatch(dataset)):
            raise ValueError(f"{project}.{dataset} is not PROJECT.DATASET")
        if project not in self._attached:
            self.con.execute(f"ATTACH '{self.folder / (project + '.duckdb')}' AS \"{project}\"")
            self._attached.add(project)
        self.con.execute(f'CREATE SCHEMA IF NOT EXISTS "{project}"."{dataset}"')

    def query(
        self,
        sql: str,
        params: dict[str, Any] | None = None,
        *,
        default_dataset: str | None = None,
        into: str | None = None,
    ) -> list[dict[str, Any]]:
        """Run a BigQuery script (one or more statements); the last statement's rows. ``into``: a
        query job's destination table, replaced by the query's rows (WRITE_TRUNCATE)."""
        for tree in sqlglot.parse(sql, read="bigquery"):
            for table in tree.find_all(sqlglot.exp.Table):
                parts = [p.name for p in table.parts]
                if len(parts) == 3:
                    self._dataset(parts[0], parts[1])
        if default_dataset:
            project, dataset = default_dataset.split(".")
            self._dataset(project, dataset)
            self.con.execute(f'USE "{project}"."{dataset}"')
        rows: list[dict[str, Any]] = []
        try:
            for statement in sqlglot.transpile(sql, read="bigquery", write="duckdb"):
                if into is not None:
                    statement = f"CREATE OR REPLACE TABLE {self._ident(into)} AS {statement}"
                used = {k: v for k, v in (params or {}).items() if f"${k}" in statement}
                result = self.con.execute(statement, used)
                if result.description:
                    names = [d[0] for d in result.description]
                    rows = [dict(zip(names, r, strict=True)) for r in result.fetchall()]
        finally:
            if default_dataset:
                self.con.execute("USE memory")
        return rows

    def create_table(self, table_id: str, fields: Sequence[dict[str, Any]]) -> None:
        """Create ``table_id`` (if missing) with a BigQuery JSON schema's fields."""
        columns = ", ".join(f'"{f["name"]}" {duckdb_type(f)}' for f in fields)
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {self._ident(table_id)} ({columns})")

    def create_from_terraform(self, dataset: str, schemas: Path, tables: Iterable[str]) -> None:
        for table in tables:
            self.create_table(f"{dataset}.{table}", json.loads((schemas / f"{table}.json").read_text()))

    def load_parquet(self, table_id: str, paths: Sequence[str | Path]) -> int:
        """A load job with WRITE_TRUNCATE: the table replaced by the files' rows; its row count."""
        files = ", ".join(f"'{p}'" for p in paths)
        self.con.execute(
            f"CREATE OR REPLACE TABLE {self._ident(table_id)} AS SELECT * FROM read_parquet([{files}])"
        )
        return self.count(table_id)

    def extract_parquet(self, table_id: str, path: str | Path) -> None:
        self.con.execute(f"COPY (SELECT * FROM {self._ident(table_id)}) TO '{path}' (FORMAT parquet)")

    def drop_table(self, table_id: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {self._ident(table_id)}")

    def count(self, table_id: str) -> int:
        return int(self.con.execute(f"SELECT COUNT(*) FROM {self._ident(table_id)}").fetchone()[0])

    def rows(self, table_id: str) -> list[dict[str, Any]]:
        result = self.con.execute(f"SELECT * FROM {self._ident(table_id)}")
        names = [d[0] for d in result.description]
        return [dict(zip(names, r, strict=True)) for r in result.fetchall()]

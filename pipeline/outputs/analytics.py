"""Run the BigQuery analytics queries locally: DuckDB over a run's Parquet output.

The SQL in ``queries/analytics/`` is written once, in BigQuery's dialect, and
translated to DuckDB's with sqlglot; ``series``, ``nodes`` and ``errors`` are
views over ``OUTPUT/<table>/*.parquet``. Results come back with BigQuery's types
(a count is an integer on both), and :func:`format_result` prints them.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
import os
from importlib import resources
from typing import Any

import pyarrow as pa

import queries
from pipeline.outputs.schemas import TABLES

FORMATS = ("table", "json", "csv")


def available_queries() -> list[str]:
    folder = resources.files(queries).joinpath("analytics")
    return sorted(p.name[: -len(".sql")] for p in folder.iterdir() if p.name.endswith(".sql"))


def analytics_sql(name: str) -> str:
    """The analytics query ``name`` in BigQuery's dialect; a ValueError listing the available
    queries when there is no such query (checked before anything else is done with ``name``)."""
    available = available_queries()
    if name not in available:
        raise ValueError(f"no analytics query {name!r}; available: {available}")
    return queries.load(f"analytics/{name}")


def duckdb_sql(name: str) -> str:
    """The analytics query ``name`` translated from BigQuery's dialect to DuckDB's."""
    analytics_sql(name)
    return queries.load_duckdb(f"analytics/{name}")


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
        return integers_as_int64(fetch())
    finally:
        con.close()


def integers_as_int64(table: pa.Table) -> pa.Table:
    """Whole-number decimal columns as INT64, the type BigQuery gives them: DuckDB answers
    ``COUNTIF`` and ``SUM`` of INT64 with HUGEINT (decimal128(38, 0) in Arrow)."""
    fields = [
        pa.field(f.name, pa.int64(), f.nullable) if pa.types.is_decimal(f.type) and f.type.scale == 0 else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))  # a count beyond INT64 fails here rather than rounding


def format_result(table: pa.Table, fmt: str) -> str:
    """A query result as text: ``table`` (aligned columns, floats rounded to what they measure
    (:func:`decimals`), at most :data:`TABLE_WIDTH` characters a line), ``json`` (one array of row
    objects) or ``csv`` (with a header); json and csv keep every digit. Integer columns stay
    integers (also with nulls among them); a null is JSON ``null``, an empty CSV field and ``null``
    in the table; times are ISO 8601."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    table = integers_as_int64(table)
    rows = [[_plain(v) for v in row] for row in zip(*(c.to_pylist() for c in table.columns), strict=True)]
    if fmt == "json":
        records = [dict(zip(table.column_names, row, strict=True)) for row in rows]
        return json.dumps(records, separators=(",", ":"), allow_nan=False) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows(rows)
        return out.getvalue()
    import pandas as pd

    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        values = column.to_pylist()
        if pa.types.is_floating(column.type):  # rounded, then pandas lines up the decimals
            digits = decimals(name)
            columns[name] = pd.Series(
                ["null" if v is None or not math.isfinite(v) else f"{v:.{digits}f}" for v in values],
                dtype=object,
            )
        else:
            columns[name] = pd.Series(["null" if v is None else str(_plain(v)) for v in values], dtype=object)
    frame = pd.DataFrame(columns)
    # wider than the terminal: columns continue in blocks below (pandas marks a cut with a backslash)
    text = frame.to_string(index=False, line_width=TABLE_WIDTH, justify="right")
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


TABLE_WIDTH = 120
"""Characters per line of ``--format table``: wider results continue in blocks of columns below."""

_DECIMALS = (
    # (column name ends with, decimals): what each measurement supports, in the table format only
    ("assd_mm_mean", 2),  # LNQ2023 reports ASSD to 0.01 mm
    ("assd_mm", 2),
    ("iou_threshold", 2),
    ("_mm2", 0),
    ("_mm", 1),  # axes: worst error under a pixel, mean about a quarter of one (docs/measurements.md)
    ("_ml", 2),
    ("_hu", 1),
    ("_s", 1),
    ("_per_patient", 2),
)


def decimals(column: str) -> int:
    """Decimals a float column is printed with in ``--format table``: DSC, sensitivity, correlation
    and other fractions 3; lengths 1 (ASSD 2); volumes 2; areas 0; HU and seconds 1; rates 2."""
    for suffix, digits in _DECIMALS:
        if column.endswith(suffix):
            return digits
    return 3


def _plain(value: Any) -> Any:
    """A value JSON can hold: NaN and infinities are null, whole decimals int, times ISO 8601."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def _listdir(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []

"""Output tables: schemas and row ordering."""

from pipeline.outputs.schemas import (
    COHORT_SCHEMA,
    ERRORS_SCHEMA,
    MEASUREMENTS_SCHEMA,
    NODES_SCHEMA,
    SERIES_SCHEMA,
    SERIES_TABLES,
    TABLES,
    conform,
    sort_rows,
    to_table,
)

__all__ = [
    "COHORT_SCHEMA",
    "ERRORS_SCHEMA",
    "MEASUREMENTS_SCHEMA",
    "NODES_SCHEMA",
    "SERIES_SCHEMA",
    "SERIES_TABLES",
    "TABLES",
    "conform",
    "sort_rows",
    "to_table",
]

"""Output tables: schemas and row ordering."""

from pipeline.outputs.schemas import (
    COHORT_SCHEMA,
    ERRORS_SCHEMA,
    NODES_SCHEMA,
    SERIES_SCHEMA,
    TABLES,
    conform,
    sort_rows,
    to_table,
)

__all__ = [
    "COHORT_SCHEMA",
    "ERRORS_SCHEMA",
    "NODES_SCHEMA",
    "SERIES_SCHEMA",
    "TABLES",
    "conform",
    "sort_rows",
    "to_table",
]

"""SQL files, one query per file; parameters are bound by the client, never formatted in.

``idc_index/`` holds the DuckDB dialect run on idc-index's bundled index (offline);
``bigquery/`` is reserved for the BigQuery twins of the same queries.
"""

from __future__ import annotations

from importlib import resources


def load(name: str) -> str:
    """The text of ``queries/<name>.sql``, for example ``load("idc_index/lnq_cohort")``."""
    return resources.files(__name__).joinpath(f"{name}.sql").read_text(encoding="utf-8")

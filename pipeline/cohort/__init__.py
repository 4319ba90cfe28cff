"""Cohort selection (offline from idc-index; BigQuery's side is ``beam_jobs.bigquery``) and
validation of cohort rows.

The names below are loaded on first use: validating a row (every series' child does) should not
import pandas and the query engine (0.3 s) that only selecting a cohort needs.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "LNQ_COLLECTION": "pipeline.cohort.query",
    "select_cohort": "pipeline.cohort.query",
    "CohortRow": "pipeline.cohort.rows",
    "check_series_url": "pipeline.cohort.rows",
    "validate_cohort_row": "pipeline.cohort.rows",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

"""Cohort selection (offline from idc-index; BigQuery's side is ``beam_jobs.bigquery``) and
validation of cohort rows."""

from pipeline.cohort.query import LNQ_COLLECTION, select_cohort
from pipeline.cohort.rows import CohortRow, check_series_url, validate_cohort_row

__all__ = ["LNQ_COLLECTION", "CohortRow", "check_series_url", "select_cohort", "validate_cohort_row"]

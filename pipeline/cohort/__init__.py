"""Cohort selection and validation: ``query`` selects the LNQ cohort offline from idc-index's bundled
index (BigQuery's twin is ``beam_jobs.bigquery``); ``rows`` validates one cohort row.

Modules are imported by name (``from pipeline.cohort.rows import validate_cohort_row``): validating a
row, which every series' child does, must not import pandas and the query engine that only
selecting a cohort needs.
"""

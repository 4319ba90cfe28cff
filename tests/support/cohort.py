"""Cohort rows and files for phantoms, as ``lnq cohort`` writes them (from ``pipeline/demo/cohort.py``)."""

from __future__ import annotations

from pipeline.demo.cohort import cohort_row, write_cohort

__all__ = ["cohort_row", "write_cohort"]

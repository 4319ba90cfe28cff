"""The run report: a static HTML page with the run's figures, failures, cohort plots and series."""

from __future__ import annotations

from pipeline.report.plots import Plot, cohort_plots
from pipeline.report.render import build_report, write_report
from pipeline.report.summary import ModelScores, ReportData, RunOverview, summarise

__all__ = [
    "ModelScores",
    "Plot",
    "ReportData",
    "RunOverview",
    "build_report",
    "cohort_plots",
    "summarise",
    "write_report",
]

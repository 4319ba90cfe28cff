"""``lnq report``: the run report of an output folder, local or gs://, written next to the tables.

Reads ``OUTPUT/series``, ``nodes`` and ``errors`` and lists ``OUTPUT/qc/*.png`` through Beam's
``FileSystems``; writes ``OUTPUT/report/index.html`` and ``OUTPUT/report/plots/*.png`` the same way.
Building the page is ``pipeline.report`` (pure); this module only moves bytes.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Mapping
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_jobs.options import UsageError
from beam_jobs.publish import add_to_manifest, read_table, report_files
from beam_jobs.run_facts import read_run_facts
from pipeline.outputs.layout import Artifact, OutputLayout
from pipeline.report.render import INDEX, build_report

logger = logging.getLogger(__name__)

MIME_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png"}


def qc_series_uids(output: str) -> set[str]:
    """Series whose QC picture exists in ``OUTPUT/qc/``."""
    matches = FileSystems.match([OutputLayout(output).artifacts(Artifact.QC)])[0].metadata_list
    return {posixpath.basename(m.path)[: -len(Artifact.QC.extension)] for m in matches}


def write_report_for_output(output: str, run_info: Mapping[str, Any] | None = None) -> str:
    """Write ``OUTPUT/report/index.html`` with its plots; returns the page's path."""
    output = output.rstrip("/")
    started = time.perf_counter()
    series, nodes, errors = (read_table(output, name) for name in ("series", "nodes", "errors"))
    files = build_report(series, nodes, errors, run_info=run_info, qc_uids=qc_series_uids(output))
    report_dir = OutputLayout(output).report_folder
    for relative, content in files.items():
        path = FileSystems.join(report_dir, *relative.split("/"))
        with FileSystems.create(path, mime_type=MIME_TYPES[posixpath.splitext(relative)[1]]) as f:
            f.write(content)
    index = FileSystems.join(report_dir, INDEX)
    logger.info(
        "report of %d series written to %s in %.1f s", series.num_rows, index, time.perf_counter() - started
    )
    return index


def write_run_report(output: str) -> str:
    """``lnq report``: rebuild the report of a published output, with its run's facts (wall time,
    series per hour) as the run's last step recorded them; its files join the manifest."""
    series = OutputLayout(output).table("series")
    if not FileSystems.exists(series):
        raise UsageError(f"{output} has no published tables ({series}); is it a run's output?")
    facts = read_run_facts(output)
    index = write_report_for_output(output, None if facts is None else facts.report_info())
    add_to_manifest(output, report_files(output))
    return index

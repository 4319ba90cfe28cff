"""The run report as files: ``index.html`` from a Jinja2 template, next to its plot PNGs.

The page is self-contained on disk (no server, no CDN, no web fonts), so it opens from a
results folder or a bucket download alike. QC pictures are linked as ``../qc/<uid>.png``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import jinja2
import pyarrow as pa
from PIL import Image

from pipeline.report.plots import cohort_plots
from pipeline.report.summary import summarise

INDEX = "index.html"
PLOT_FOLDER = "plots"


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):,.{digits}f}" if digits else f"{round(float(value)):,d}"


def _signed(value: Any, digits: int = 2) -> str:
    """A difference with its sign: +12.30, -0.50 (a bias reads wrong without one)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):+,.{digits}f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, s = divmod(float(seconds), 60.0)
    hours, m = divmod(int(minutes), 60)
    return f"{hours} h {m:02d} min" if hours else (f"{m} min {s:02.0f} s" if m else f"{s:.1f} s")


def _sortkey(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, signed=_signed, percent=_percent, duration=_duration, sortkey=_sortkey)
    return env


def build_report(
    series: pa.Table,
    nodes: pa.Table,
    errors: pa.Table,
    *,
    run_info: Mapping[str, Any] | None = None,
    qc_uids: Collection[str] = (),
) -> dict[str, bytes]:
    """The report's files by path relative to the report folder: ``index.html`` and ``plots/*.png``.

    ``run_info`` may give ``started_at``, ``finished_at`` and ``wall_s``; ``qc_uids`` names the
    series whose QC picture exists (only those are linked).
    """
    data = summarise(series, errors, run_info=run_info, qc_uids=qc_uids, nodes=nodes)
    files: dict[str, bytes] = {}
    plots = []
    for plot in cohort_plots(series, nodes):
        path = f"{PLOT_FOLDER}/{plot.file_name}"
        files[path] = plot.png
        width, height = Image.open(io.BytesIO(plot.png)).size
        plots.append(
            {"src": path, "title": plot.title, "caption": plot.caption, "width": width, "height": height}
        )
    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            overview=data.overview,
            failures=data.failures,
            failures_per_stage=data.failures_per_stage,
            series_rows=data.series_rows,
            scores=data.scores,
            plots=plots,
        )
    )
    files[INDEX] = html.encode("utf-8")
    return files


def write_report(
    report_dir: str | Path,
    series: pa.Table,
    nodes: pa.Table,
    errors: pa.Table,
    *,
    run_info: Mapping[str, Any] | None = None,
    qc_uids: Collection[str] = (),
) -> Path:
    """Write the report into a local folder (``DIR/report`` of a run); returns ``index.html``."""
    folder = Path(report_dir)
    for relative, content in build_report(series, nodes, errors, run_info=run_info, qc_uids=qc_uids).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder / INDEX

"""Process one cohort row: fetch, decode, place the reference, measure.

Pure orchestration with no Beam in it, so it can be called from a DoFn, a
test or a notebook. Whatever goes wrong with this series ends up in the
returned :class:`SeriesResult` as a ``status='error'`` series row plus error
rows; it never propagates to stop other series.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import pipeline
from pipeline.cohort.rows import CohortRow, validate_cohort_row
from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.reference_seg import read_reference_seg
from pipeline.dicom.volume import CtVolume
from pipeline.errors import PipelineError, ReferenceSegError
from pipeline.fetch.s5cmd import FetchConfig, fetch_series
from pipeline.measure.burden import burden_columns, series_burden
from pipeline.measure.nodes import NodeMeasurement, measure_nodes

logger = logging.getLogger(__name__)

STAGES = ("fetch", "decode", "reference", "measure")


@dataclass(frozen=True)
class ProcessConfig:
    """Settings shared by every series of a run."""

    fetch: FetchConfig = FetchConfig()
    work_dir: str | None = None
    pipeline_version: str = pipeline.__version__


@dataclass
class SeriesResult:
    """Rows for the three output tables from one cohort row."""

    series: dict[str, Any]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"series": self.series, "nodes": self.nodes, "errors": self.errors}


def error_row(series_uid: str, stage: str, exc: BaseException) -> dict[str, Any]:
    """An ``errors`` row; the message names the series and what was wrong."""
    message = str(exc) or repr(exc)
    if series_uid and series_uid not in message:
        message = f"series {series_uid}: {message}"
    return {
        "ct_series_instance_uid": series_uid,
        "stage": stage,
        "error_type": type(exc).__name__,
        "message": message,
    }


def base_series_row(raw: Mapping[str, Any], *, pipeline_version: str) -> dict[str, Any]:
    """A series row with the cohort's identifiers and every measure still empty."""

    def text(name: str) -> str | None:
        value = raw.get(name)
        return None if value is None or value != value else str(value)

    return {
        "ct_series_instance_uid": text("ct_series_instance_uid") or "",
        "patient_id": text("patient_id"),
        "study_instance_uid": text("study_instance_uid"),
        "annotation": text("annotation"),
        "status": "error",
        "n_slices": None,
        "slice_spacing_mm": None,
        **{name: None for name in burden_columns("reference")},
        "pipeline_version": pipeline_version,
        "processed_at": dt.datetime.now(dt.timezone.utc),
        **{f"{stage}_s": None for stage in STAGES},
        "total_s": None,
    }


def node_rows(row: CohortRow, source: str, nodes: list[NodeMeasurement]) -> list[dict[str, Any]]:
    """``nodes`` table rows for one series and source."""
    return [
        {
            "ct_series_instance_uid": row.ct_series_instance_uid,
            "patient_id": row.patient_id,
            "source": source,
            "node_index": n.node_index,
            "voxel_count": n.voxel_count,
            "volume_ml": n.volume_ml,
            "centroid_x_mm": n.centroid_mm[0],
            "centroid_y_mm": n.centroid_mm[1],
            "centroid_z_mm": n.centroid_mm[2],
            "long_axis_mm": n.long_axis_mm,
            "short_axis_mm": n.short_axis_mm,
            "measurement_slice_z_mm": n.measurement_slice_z_mm,
            "max_diameter_3d_mm": n.max_diameter_3d_mm,
            "bbox_min_x_mm": n.bbox_min_mm[0],
            "bbox_min_y_mm": n.bbox_min_mm[1],
            "bbox_min_z_mm": n.bbox_min_mm[2],
            "bbox_max_x_mm": n.bbox_max_mm[0],
            "bbox_max_y_mm": n.bbox_max_mm[1],
            "bbox_max_z_mm": n.bbox_max_mm[2],
            "mean_hu": n.mean_hu,
            "std_hu": n.std_hu,
            "recist_category": n.recist_category,
        }
        for n in nodes
    ]


class _StageClock:
    """Times each stage and remembers which one is running when something fails."""

    def __init__(self, series: dict[str, Any]) -> None:
        self.series = series
        self.current = "cohort"

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.current = name
        start = time.perf_counter()
        try:
            yield
        finally:
            self.series[f"{name}_s"] = round(time.perf_counter() - start, 4)


def process_series(raw: Mapping[str, Any], *, config: ProcessConfig = ProcessConfig()) -> SeriesResult:
    """Run every stage for one cohort row and return its output rows."""
    start = time.perf_counter()
    series = base_series_row(raw, pipeline_version=config.pipeline_version)
    result = SeriesResult(series=series)
    clock = _StageClock(series)
    try:
        row = validate_cohort_row(raw)
        with tempfile.TemporaryDirectory(prefix="lnq-", dir=config.work_dir) as tmp:
            _run_stages(row, tmp, clock, result, config)
        series["status"] = "ok"
    except Exception as exc:  # every failure of this series becomes rows, never a crash
        stage = exc.stage if isinstance(exc, PipelineError) else clock.current
        uid = series["ct_series_instance_uid"]
        result.errors.append(error_row(uid, stage, exc))
        result.nodes = []
        log = logger.warning if isinstance(exc, PipelineError) else logger.exception
        log("series %s failed at %s: %s", uid, stage, exc)
    series["total_s"] = round(time.perf_counter() - start, 4)
    return result


def _run_stages(
    row: CohortRow, tmp: str, clock: _StageClock, result: SeriesResult, config: ProcessConfig
) -> None:
    uid = row.ct_series_instance_uid
    with clock.stage("fetch"):
        ct_dir = fetch_series(
            row.ct_series_url,
            os.path.join(tmp, "ct"),
            series_uid=uid,
            expected_count=row.ct_instance_count,
            config=config.fetch,
        )
        seg_dir = None
        if row.seg_series_url is not None:
            seg_dir = fetch_series(
                row.seg_series_url, os.path.join(tmp, "seg"), series_uid=uid, config=config.fetch
            )
    with clock.stage("decode"):
        ct = decode_ct_series(ct_dir, expected_series_uid=uid)
    result.series["n_slices"] = ct.geometry.size_zyx[0]
    result.series["slice_spacing_mm"] = ct.geometry.spacing_mm[2]
    with clock.stage("reference"):
        if seg_dir is None:
            raise ReferenceSegError(
                "the cohort row has no reference SEG (seg_series_url is null) to measure",
                series_uid=uid,
            )
        reference = read_reference_seg(_single_seg_file(seg_dir, uid), ct)
    with clock.stage("measure"):
        nodes = measure_nodes(reference, ct.geometry, hu=ct.hu)
    result.nodes = node_rows(row, "reference", nodes)
    result.series.update(series_burden(nodes).columns("reference"))
    _log_done(ct, nodes)


def _single_seg_file(folder: str, series_uid: str) -> str:
    if os.path.isfile(folder):
        return folder
    files = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    if len(files) != 1:
        raise ReferenceSegError(
            f"expected one reference SEG file, found {len(files)} in {folder}", series_uid=series_uid
        )
    return os.path.join(folder, files[0])


def _log_done(ct: CtVolume, nodes: list[NodeMeasurement]) -> None:
    logger.info(
        "series %s: %d slices, %d reference nodes, %.2f ml",
        ct.series_uid,
        ct.geometry.size_zyx[0],
        len(nodes),
        float(np.sum([n.volume_ml for n in nodes])) if nodes else 0.0,
    )

"""Process one cohort row: fetch, decode, reference, inference, measure, SEG, score.

Pure orchestration with no Beam in it, so it can be called from a DoFn, a
test or a notebook. Whatever goes wrong with this series ends up in the
returned :class:`SeriesResult` as a ``status='error'`` series row plus error
rows; it never propagates to stop other series.

Reference mode (no model) measures the expert SEG, which must exist. Model mode
also segments the CT, measures the prediction, hands its DICOM SEG to a sink
(the Beam job writes it to ``DIR/seg/``) and, when a reference exists, scores
the prediction against it (LNQ2023 DSC and ASSD, node detection).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import pipeline
from pipeline.cohort.rows import CohortRow, validate_cohort_row
from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.reference_seg import read_reference_seg
from pipeline.dicom.seg_writer import prediction_seg, seg_bytes
from pipeline.dicom.volume import CtVolume, mask_to_sitk
from pipeline.errors import PipelineError, ReferenceSegError
from pipeline.evaluate.detection import detect
from pipeline.evaluate.lnq2023 import score_case
from pipeline.fetch.s5cmd import FetchConfig, fetch_series
from pipeline.measure.burden import burden_columns, series_burden
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import NodeMeasurement, measure_labelled
from pipeline.models.base import SegmentationModel
from pipeline.models.spec import ModelSpec
from pipeline.outputs.schemas import STAGE_NAMES

logger = logging.getLogger(__name__)

STAGES = STAGE_NAMES
SCORE_COLUMNS = (
    "dsc",
    "assd_mm",
    "n_reference_nodes_ge_10mm_detected",
    "sensitivity_short_axis_ge_10mm",
    "false_positive_nodes",
)

SegSink = Callable[[str, bytes], str]
"""Stores one SEG (series UID, DICOM bytes) and returns where it went."""


@dataclass(frozen=True)
class ProcessConfig:
    """Settings shared by every series of a run."""

    fetch: FetchConfig = FetchConfig()
    work_dir: str | None = None
    pipeline_version: str = pipeline.__version__
    model: ModelSpec = field(default_factory=ModelSpec)


@dataclass
class SeriesResult:
    """Rows for the three output tables from one cohort row."""

    series: dict[str, Any]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"series": self.series, "nodes": self.nodes, "errors": self.errors}


def error_row(series_uid: str, stage: str, exc: BaseException, *, model: str = "reference") -> dict[str, Any]:
    """An ``errors`` row; the message names the series and what was wrong."""
    message = str(exc) or repr(exc)
    if series_uid and series_uid not in message:
        message = f"series {series_uid}: {message}"
    return {
        "ct_series_instance_uid": series_uid,
        "model": model,
        "stage": stage,
        "error_type": type(exc).__name__,
        "message": message,
    }


def base_series_row(
    raw: Mapping[str, Any], *, pipeline_version: str, model: str = "reference"
) -> dict[str, Any]:
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
        "model": model,
        "seg_uri": None,
        "n_slices": None,
        "slice_spacing_mm": None,
        **{name: None for name in burden_columns("reference")},
        **{name: None for name in burden_columns("prediction")},
        **{name: None for name in SCORE_COLUMNS},
        "pipeline_version": pipeline_version,
        "processed_at": dt.datetime.now(dt.timezone.utc),
        **{f"{stage}_s": None for stage in STAGES},
        "total_s": None,
    }


def node_rows(
    row: CohortRow, source: str, nodes: list[NodeMeasurement], *, model: str = "reference"
) -> list[dict[str, Any]]:
    """``nodes`` table rows for one series and source; ``model`` is the run's model label."""
    return [
        {
            "ct_series_instance_uid": row.ct_series_instance_uid,
            "patient_id": row.patient_id,
            "model": model,
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
            self.series[f"{name}_s"] = round(
                (self.series[f"{name}_s"] or 0.0) + time.perf_counter() - start, 4
            )


def process_series(
    raw: Mapping[str, Any],
    *,
    config: ProcessConfig = ProcessConfig(),
    model: SegmentationModel | None = None,
    seg_sink: SegSink | None = None,
) -> SeriesResult:
    """Run every stage for one cohort row and return its output rows.

    ``model`` is the loaded model of ``config.model`` (None in reference mode);
    ``seg_sink`` stores the prediction's SEG (None: no SEG is written).
    """
    start = time.perf_counter()
    series = base_series_row(raw, pipeline_version=config.pipeline_version, model=config.model.label)
    result = SeriesResult(series=series)
    clock = _StageClock(series)
    try:
        row = validate_cohort_row(raw)
        if model is None and not config.model.is_reference:
            raise PipelineError(
                f"model {config.model.label} was not loaded", series_uid=row.ct_series_instance_uid
            )
        with tempfile.TemporaryDirectory(prefix="lnq-", dir=config.work_dir) as tmp:
            _run_stages(row, tmp, clock, result, fetch=config.fetch, model=model, seg_sink=seg_sink)
        series["status"] = "ok"
    except Exception as exc:  # every failure of this series becomes rows, never a crash
        stage = exc.stage if isinstance(exc, PipelineError) and exc.stage != "pipeline" else clock.current
        uid = series["ct_series_instance_uid"]
        result.errors.append(error_row(uid, stage, exc, model=series["model"]))
        result.nodes = []
        log = logger.warning if isinstance(exc, PipelineError) else logger.exception
        log("series %s failed at %s: %s", uid, stage, exc)
    series["total_s"] = round(time.perf_counter() - start, 4)
    return result


def _run_stages(
    row: CohortRow,
    tmp: str,
    clock: _StageClock,
    result: SeriesResult,
    *,
    fetch: FetchConfig,
    model: SegmentationModel | None,
    seg_sink: SegSink | None,
) -> None:
    uid = row.ct_series_instance_uid
    series = result.series
    with clock.stage("fetch"):
        ct_dir = fetch_series(
            row.ct_series_url,
            os.path.join(tmp, "ct"),
            series_uid=uid,
            expected_count=row.ct_instance_count,
            config=fetch,
        )
        seg_dir = None
        if row.seg_series_url is not None:
            seg_dir = fetch_series(row.seg_series_url, os.path.join(tmp, "seg"), series_uid=uid, config=fetch)
    with clock.stage("decode"):
        ct = decode_ct_series(ct_dir, expected_series_uid=uid)
    series["n_slices"] = ct.geometry.size_zyx[0]
    series["slice_spacing_mm"] = ct.geometry.spacing_mm[2]

    reference = None
    if seg_dir is not None:
        with clock.stage("reference"):
            reference = read_reference_seg(_single_seg_file(seg_dir, uid), ct)
    elif model is None:
        raise ReferenceSegError(
            "the cohort row has no reference SEG (seg_series_url is null) to measure", series_uid=uid
        )

    prediction = None
    if model is not None:
        with clock.stage("inference"):
            predicted = model.predict(ct)
        for step, seconds in predicted.seconds.items():
            series[f"{step}_s"] = round(seconds, 4)
        prediction = predicted.mask

    ref_short: dict[int, float] = {}
    with clock.stage("measure"):
        labels: dict[str, np.ndarray] = {}
        for source, mask in (("reference", reference), ("prediction", prediction)):
            if mask is None:
                continue
            labels[source] = label_nodes(mask, ct.geometry)
            nodes = measure_labelled(labels[source], ct.geometry, hu=ct.hu)
            result.nodes.extend(node_rows(row, source, nodes, model=series["model"]))
            series.update(series_burden(nodes).columns(source))
            if source == "reference":
                ref_short = {n.node_index: n.short_axis_mm for n in nodes}

    if prediction is not None and model is not None:
        if seg_sink is not None:
            with clock.stage("seg_write"):
                seg = prediction_seg(prediction, ct, model_name=model.name, model_version=model.version)
                series["seg_uri"] = seg_sink(uid, seg_bytes(seg))
        if reference is not None:
            with clock.stage("score"):
                _score(series, ct, prediction, reference, labels, ref_short, row)
    _log_done(ct, series)


def _score(
    series: dict[str, Any],
    ct: CtVolume,
    prediction: np.ndarray,
    reference: np.ndarray,
    labels: dict[str, np.ndarray],
    ref_short: dict[int, float],
    row: CohortRow,
) -> None:
    score = score_case(mask_to_sitk(prediction, ct.geometry), mask_to_sitk(reference, ct.geometry))
    series.update(score.as_json())
    detection = detect(
        labels["prediction"],
        labels["reference"],
        ref_short_axis_mm=ref_short,
        fully_annotated=row.annotation == "full",
    )
    series.update(detection.columns())


def _single_seg_file(folder: str, series_uid: str) -> str:
    if os.path.isfile(folder):
        return folder
    files = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    if len(files) != 1:
        raise ReferenceSegError(
            f"expected one reference SEG file, found {len(files)} in {folder}", series_uid=series_uid
        )
    return os.path.join(folder, files[0])


def _log_done(ct: CtVolume, series: dict[str, Any]) -> None:
    logger.info(
        "series %s: %d slices, %s reference nodes, %s predicted nodes",
        ct.series_uid,
        ct.geometry.size_zyx[0],
        series["n_reference_nodes"],
        series["n_prediction_nodes"],
    )

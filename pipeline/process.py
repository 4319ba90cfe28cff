"""Process one cohort row: fetch, decode, reference, inference, measure, SEG, score.

Orchestration only, with no Beam in it, so it can be called from a DoFn, a test
or a notebook. Each stage is a call into the library; whatever goes wrong with
this series ends up in the returned :class:`~pipeline.outcome.SeriesOutcome` as
an error, never propagating to stop other series.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

import pipeline
from pipeline.cohort.rows import CohortRow, validate_cohort_row
from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.reference_seg import read_reference_seg
from pipeline.dicom.seg_writer import prediction_seg, seg_bytes
from pipeline.dicom.volume import CtVolume, mask_to_sitk
from pipeline.enums import NodeSource, Stage
from pipeline.errors import ModelError, PipelineError, ReferenceSegError
from pipeline.evaluate.detection import Detection, detect
from pipeline.evaluate.lnq2023 import CaseScore, score_case
from pipeline.fetch.s5cmd import FetchConfig, fetch_series
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled
from pipeline.models.base import SegmentationModel
from pipeline.models.spec import ModelSpec, model_label
from pipeline.outcome import GridSummary, SeriesError, SeriesIdentity, SeriesOutcome, SourceNodes

logger = logging.getLogger(__name__)

SegSink = Callable[[str, bytes], str]
"""Stores one SEG (series UID, DICOM bytes) and returns where it went."""


@dataclass(frozen=True)
class ProcessConfig:
    """Settings shared by every series of a run; ``model`` None is the reference mode."""

    fetch: FetchConfig = FetchConfig()
    work_dir: str | None = None
    pipeline_version: str = pipeline.__version__
    model: ModelSpec | None = None

    @property
    def model_label(self) -> str:
        return model_label(self.model)


class StageClock:
    """Seconds per stage, which stage is running when something fails, and the CT grid once
    it is known (a failed series keeps both)."""

    def __init__(self) -> None:
        self.current = Stage.COHORT
        self.seconds: dict[Stage, float] = {}
        self.grid: GridSummary | None = None

    @contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        self.current = stage
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: Stage, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass(frozen=True)
class _Measured:
    """What the stages produced for a series that succeeded."""

    grid: GridSummary
    sources: tuple[SourceNodes, ...]
    seg_uri: str | None
    score: CaseScore | None
    detection: Detection | None


def process_series(
    raw: Mapping[str, Any],
    *,
    config: ProcessConfig = ProcessConfig(),
    model: SegmentationModel | None = None,
    seg_sink: SegSink | None = None,
) -> SeriesOutcome:
    """Run every stage for one cohort row and return its outcome.

    ``model`` is the loaded model of ``config.model`` (None in reference mode);
    ``seg_sink`` stores the prediction's SEG (None: no SEG is written).
    """
    start = time.perf_counter()
    identity = SeriesIdentity.from_cohort(raw)
    clock = StageClock()
    try:
        row = validate_cohort_row(raw)
        if model is None and config.model is not None:
            raise ModelError(
                f"model {config.model_label} was not loaded", series_uid=identity.ct_series_instance_uid
            )
        with tempfile.TemporaryDirectory(prefix="lnq-", dir=config.work_dir) as tmp:
            measured = _run_stages(row, tmp, clock, fetch=config.fetch, model=model, seg_sink=seg_sink)
    except Exception as exc:  # every failure of this series becomes its error, never a crash
        error = SeriesError.from_exception(
            exc, stage=clock.current, series_uid=identity.ct_series_instance_uid
        )
        log = logger.warning if isinstance(exc, PipelineError) else logger.exception
        log("series %s failed at %s: %s", identity.ct_series_instance_uid, error.stage, exc)
        return SeriesOutcome.failed(
            identity,
            error,
            model=config.model_label,
            pipeline_version=config.pipeline_version,
            seconds=clock.seconds,
            total_s=round(time.perf_counter() - start, 4),
            grid=clock.grid,
        )
    return SeriesOutcome(
        identity=identity,
        model=config.model_label,
        pipeline_version=config.pipeline_version,
        processed_at=dt.datetime.now(dt.timezone.utc),
        seconds=clock.seconds,
        total_s=round(time.perf_counter() - start, 4),
        grid=measured.grid,
        sources=measured.sources,
        seg_uri=measured.seg_uri,
        score=measured.score,
        detection=measured.detection,
    )


def _run_stages(
    row: CohortRow,
    tmp: str,
    clock: StageClock,
    *,
    fetch: FetchConfig,
    model: SegmentationModel | None,
    seg_sink: SegSink | None,
) -> _Measured:
    uid = row.ct_series_instance_uid
    with clock.stage(Stage.FETCH):
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
    with clock.stage(Stage.DECODE):
        ct = decode_ct_series(ct_dir, expected_series_uid=uid)
    grid = clock.grid = GridSummary(
        n_slices=ct.geometry.size_zyx[0], slice_spacing_mm=ct.geometry.spacing_mm[2]
    )

    masks: dict[NodeSource, np.ndarray] = {}
    if seg_dir is not None:
        with clock.stage(Stage.REFERENCE):
            masks[NodeSource.REFERENCE] = read_reference_seg(_single_seg_file(seg_dir, uid), ct)
    elif model is None:
        raise ReferenceSegError(
            "the cohort row has no reference SEG (seg_series_url is null) to measure", series_uid=uid
        )
    if model is not None:
        with clock.stage(Stage.INFERENCE):
            predicted = model.predict(ct)
            if predicted.mask.shape != ct.hu.shape:
                raise ModelError(
                    f"model {model.name} returned a mask of shape {predicted.mask.shape} "
                    f"for a CT of shape {ct.hu.shape} [z, y, x]",
                    series_uid=uid,
                )
        # the model times its own steps: its resampling back to the CT grid is post-processing
        clock.seconds[Stage.INFERENCE] = predicted.inference_s
        clock.add(Stage.POSTPROCESS, predicted.postprocess_s)
        masks[NodeSource.PREDICTION] = predicted.mask

    with clock.stage(Stage.MEASURE):
        labels = {source: label_nodes(mask, ct.geometry) for source, mask in masks.items()}
        sources = tuple(
            SourceNodes(source, tuple(measure_labelled(labels[source], ct.geometry, hu=ct.hu)))
            for source in masks
        )

    seg_uri = score = detection = None
    if model is not None:
        prediction = masks[NodeSource.PREDICTION]
        if seg_sink is not None:
            with clock.stage(Stage.SEG_WRITE):
                seg = prediction_seg(prediction, ct, model_name=model.name, model_version=model.version)
                seg_uri = seg_sink(uid, seg_bytes(seg))
        if NodeSource.REFERENCE in masks:
            with clock.stage(Stage.SCORE):
                score, detection = _score(
                    ct, masks, labels, sources, fully_annotated=row.annotation == "full"
                )
    _log_done(ct, sources)
    return _Measured(grid=grid, sources=sources, seg_uri=seg_uri, score=score, detection=detection)


def _score(
    ct: CtVolume,
    masks: dict[NodeSource, np.ndarray],
    labels: dict[NodeSource, np.ndarray],
    sources: tuple[SourceNodes, ...],
    *,
    fully_annotated: bool,
) -> tuple[CaseScore, Detection]:
    """LNQ2023 scores of the prediction against the reference, and node detection."""
    reference_nodes = next(s.nodes for s in sources if s.source == NodeSource.REFERENCE)
    score = score_case(
        mask_to_sitk(masks[NodeSource.PREDICTION], ct.geometry),
        mask_to_sitk(masks[NodeSource.REFERENCE], ct.geometry),
    )
    detection = detect(
        labels[NodeSource.PREDICTION],
        labels[NodeSource.REFERENCE],
        ref_short_axis_mm={n.node_index: n.short_axis_mm for n in reference_nodes},
        fully_annotated=fully_annotated,
    )
    return score, detection


def _single_seg_file(folder: str, series_uid: str) -> str:
    if os.path.isfile(folder):
        return folder
    files = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    if len(files) != 1:
        raise ReferenceSegError(
            f"expected one reference SEG file, found {len(files)} in {folder}", series_uid=series_uid
        )
    return os.path.join(folder, files[0])


def _log_done(ct: CtVolume, sources: tuple[SourceNodes, ...]) -> None:
    counts = ", ".join(f"{len(s.nodes)} {s.source.value} nodes" for s in sources)
    logger.info("series %s: %d slices, %s", ct.series_uid, ct.geometry.size_zyx[0], counts)

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

import dataclasses
import datetime as dt
import functools
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

import pipeline
from pipeline.cohort.rows import CohortRow, validate_cohort_row
from pipeline.dicom.seg_writer import REFERENCE_MODEL_NAME, nodes_seg, seg_bytes, segment_tracking
from pipeline.dicom.sr import nodes_sr, sr_bytes
from pipeline.dicom.tracking import node_tracking
from pipeline.dicom.volume import CtVolume, mask_to_sitk
from pipeline.enums import NodeSource, Stage
from pipeline.errors import ModelError, PipelineError
from pipeline.evaluate.detection import Detection, detect
from pipeline.evaluate.lnq2023 import CaseScore, score_case
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.inputs import SeriesInputs, load_series_inputs
from pipeline.isolation import IsolatedFailure, Limits, run_isolated
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled
from pipeline.models.base import SegmentationModel
from pipeline.models.spec import ModelSpec, model_label
from pipeline.outcome import GridSummary, SeriesError, SeriesIdentity, SeriesOutcome, SourceNodes

logger = logging.getLogger(__name__)

ArtifactSink = Callable[[str, str, bytes], str]
"""Stores one file a series made, ``(kind, series UID, bytes)`` with kind ``seg``, ``sr`` (DICOM) or
``qc`` (PNG), and returns where it went."""


@dataclass(frozen=True)
class ProcessConfig:
    """Settings shared by every series of a run; ``model`` None is the reference mode."""

    fetch: FetchConfig = FetchConfig()
    work_dir: str | None = None
    pipeline_version: str = pipeline.__version__
    model: ModelSpec | None = None
    limits: Limits = Limits()
    isolate: bool = True
    """Fetch and decode in a limited child process (off only for debugging)."""

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
    sr_uri: str | None
    qc_uri: str | None
    score: CaseScore | None
    detection: Detection | None


def process_series(
    raw: Mapping[str, Any],
    *,
    config: ProcessConfig = ProcessConfig(),
    model: SegmentationModel | None = None,
    sink: ArtifactSink | None = None,
) -> SeriesOutcome:
    """Run every stage for one cohort row and return its outcome.

    ``model`` is the loaded model of ``config.model`` (None in reference mode); ``sink`` stores
    the per-node SEG and SR of the run's nodes (the prediction's, or the expert's in reference
    mode) and the QC picture (None: nothing is written).
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
            measured = _run_stages(row, tmp, clock, config=config, model=model, sink=sink)
    except Exception as exc:  # every failure of this series becomes its error, never a crash
        error = (
            exc.error
            if isinstance(exc, IsolatedFailure)
            else SeriesError.from_exception(
                exc, stage=clock.current, series_uid=identity.ct_series_instance_uid
            )
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
        sr_uri=measured.sr_uri,
        qc_uri=measured.qc_uri,
        score=measured.score,
        detection=measured.detection,
    )


def _run_stages(
    row: CohortRow,
    tmp: str,
    clock: StageClock,
    *,
    config: ProcessConfig,
    model: SegmentationModel | None,
    sink: ArtifactSink | None,
) -> _Measured:
    uid = row.ct_series_instance_uid
    inputs = _load_inputs(row, tmp, clock, config=config, reference_required=model is None)
    for stage, seconds in inputs.seconds.items():
        clock.add(stage, seconds)
    ct, reference = inputs.load()
    grid = clock.grid = GridSummary(
        n_slices=ct.geometry.size_zyx[0], slice_spacing_mm=ct.geometry.spacing_mm[2]
    )

    masks: dict[NodeSource, np.ndarray] = {}
    if reference is not None:
        masks[NodeSource.REFERENCE] = reference
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

    seg_uri = sr_uri = qc_uri = score = detection = None
    if model is not None and NodeSource.REFERENCE in masks:
        with clock.stage(Stage.SCORE):
            score, detection = _score(ct, masks, labels, sources, fully_annotated=row.annotation == "full")
    if sink is not None:
        # the nodes the run is about: the model's, or in reference mode the expert's
        primary = NodeSource.PREDICTION if model is not None else NodeSource.REFERENCE
        name, version = (
            (model.name, model.version)
            if model is not None
            else (REFERENCE_MODEL_NAME, row.seg_series_instance_uid or REFERENCE_MODEL_NAME)
        )
        with clock.stage(Stage.SEG_WRITE):
            primary_nodes = next(s.nodes for s in sources if s.source == primary)
            seg = nodes_seg(
                labels[primary], ct, primary_nodes, model_name=name, model_version=version, source=primary
            )
            seg_uri = sink("seg", uid, seg_bytes(seg))
            report = nodes_sr(seg, primary_nodes, model_name=name, model_version=version, source=primary)
            sr_uri = None if report is None else sink("sr", uid, sr_bytes(report))
            tracking = {n: t.uid for n, t in segment_tracking(seg).items()}
            sources = tuple(
                _tracked(
                    entry, tracking if entry.source == primary else {}, uid, model_name=name, version=version
                )
                for entry in sources
            )
        with clock.stage(Stage.QC):
            qc_uri = sink("qc", uid, _qc_picture(ct, labels, sources, title=f"{row.patient_id}  {uid}"))
    _log_done(ct, sources)
    return _Measured(
        grid=grid,
        sources=sources,
        seg_uri=seg_uri,
        sr_uri=sr_uri,
        qc_uri=qc_uri,
        score=score,
        detection=detection,
    )


def _tracked(
    entry: SourceNodes, in_seg: Mapping[int, str], series_uid: str, *, model_name: str, version: str
) -> SourceNodes:
    """``entry`` with each node's tracking UID: the one its SEG segment carries, or for nodes
    without a segment (the expert's, in model mode) the one the SEG writer would derive."""

    def uid_of(node_index: int) -> str:
        if node_index in in_seg:
            return in_seg[node_index]
        return node_tracking(
            series_uid,
            model_name=model_name,
            model_version=version,
            source=entry.source,
            node_index=node_index,
        ).uid

    return dataclasses.replace(entry, tracking_uids=tuple(uid_of(n.node_index) for n in entry.nodes))


def _qc_picture(
    ct: CtVolume, labels: dict[NodeSource, np.ndarray], sources: tuple[SourceNodes, ...], *, title: str
) -> bytes:
    """The series' QC picture: outlines of both masks and the axes of every measured node."""
    from pipeline.qc.picture import nodes_for_qc, qc_png

    return qc_png(
        ct.hu,
        ct.geometry,
        reference_labels=labels.get(NodeSource.REFERENCE),
        prediction_labels=labels.get(NodeSource.PREDICTION),
        nodes=[node for entry in sources for node in nodes_for_qc(entry.nodes, entry.source.value)],
        title=title,
    )


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


def _load_inputs(
    row: CohortRow, tmp: str, clock: StageClock, *, config: ProcessConfig, reference_required: bool
) -> SeriesInputs:
    """Fetch and decode in an isolated child (see :mod:`pipeline.isolation`), or in this process
    when isolation is off; either way the stages it went through are timed by ``clock``."""
    load = functools.partial(
        load_series_inputs, row=row, folder=tmp, fetch=config.fetch, reference_required=reference_required
    )
    if config.isolate:
        inputs: SeriesInputs = run_isolated(
            load, series_uid=row.ct_series_instance_uid, limits=config.limits, first_stage=Stage.FETCH
        )
        return inputs

    def report(stage: Stage) -> None:
        clock.current = stage

    return load(report=report)


def _log_done(ct: CtVolume, sources: tuple[SourceNodes, ...]) -> None:
    counts = ", ".join(f"{len(s.nodes)} {s.source.value} nodes" for s in sources)
    logger.info("series %s: %d slices, %s", ct.series_uid, ct.geometry.size_zyx[0], counts)

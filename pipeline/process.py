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
import functools
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.cohort.rows import CohortRow, validate_cohort_row
from pipeline.enums import DEFAULT_IOU_THRESHOLD, Stage
from pipeline.errors import IsolatedFailure, ModelError, PipelineError, SeriesError
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.isolation import Limits, run_isolated
from pipeline.model_host import ModelHost, predict_to_file
from pipeline.models.base import SavedPrediction, SegmentationModel
from pipeline.models.spec import ModelSpec, model_label
from pipeline.outcome import GridSummary, SeriesIdentity, SeriesOutcome
from pipeline.provenance import build_version
from pipeline.stage_clock import StageClock

if TYPE_CHECKING:
    from pipeline.inputs import SeriesInputs
    from pipeline.series_stages import MeasuredSeries

logger = logging.getLogger(__name__)

ArtifactSink = Callable[[str, str, str], str]
"""Stores one file a series made, ``(kind, series UID, local path)`` with kind ``seg``, ``sr`` (DICOM)
or ``qc`` (PNG), and returns where it went; the file is in the series' work folder, which is
removed after the series."""


@dataclass(frozen=True)
class ProcessConfig:
    """Settings shared by every series of a run; ``model`` None is the reference mode."""

    fetch: FetchConfig = FetchConfig()
    work_dir: str | None = None
    pipeline_version: str = field(default_factory=build_version)
    """The build that computes the results (release + source digest: :mod:`pipeline.provenance`)."""
    model: ModelSpec | None = None
    limits: Limits = Limits()
    isolate: bool = True
    """Fetch and decode in a limited child process (off only for debugging)."""
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    """Node detection: predicted and reference nodes match one to one at IoU >= this."""

    @property
    def model_label(self) -> str:
        return model_label(self.model)


@dataclass
class _Seen:
    """What a series has shown so far, for its outcome should a later stage fail."""

    grid: GridSummary | None = None


def process_series(
    raw: Mapping[str, Any],
    *,
    config: ProcessConfig = ProcessConfig(),
    model: SegmentationModel | ModelHost | None = None,
    sink: ArtifactSink | None = None,
) -> SeriesOutcome:
    """Run every stage for one cohort row and return its outcome.

    ``model`` is the loaded model of ``config.model`` (None in reference mode): a :class:`ModelHost`
    (the model in a process of its own, held to the series' limits: what the Beam job passes) or a
    model object run in this process; ``sink`` stores
    the per-node SEG and SR of the run's nodes (the prediction's, or the expert's in reference
    mode) and the QC picture (None: nothing is written).
    """
    identity = SeriesIdentity.from_cohort(raw)
    clock = StageClock()
    seen = _Seen()
    try:
        row = validate_cohort_row(raw)
        if model is None and config.model is not None:
            raise ModelError(
                f"model {config.model_label} was not loaded", series_uid=identity.ct_series_instance_uid
            )
        with tempfile.TemporaryDirectory(prefix="lnq-", dir=config.work_dir) as tmp:
            measured, uris = _run_stages(row, tmp, clock, seen, config=config, model=model, sink=sink)
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
            total_s=clock.total_s(),
            grid=seen.grid,
        )
    return SeriesOutcome(
        identity=identity,
        model=config.model_label,
        pipeline_version=config.pipeline_version,
        processed_at=dt.datetime.now(dt.timezone.utc),
        seconds=clock.seconds,
        total_s=clock.total_s(),
        grid=measured.grid,
        sources=measured.sources,
        seg_uri=uris.get("seg"),
        sr_uri=uris.get("sr"),
        qc_uri=uris.get("qc"),
        score=measured.score,
        detection=measured.detection,
    )


def _run_stages(
    row: CohortRow,
    tmp: str,
    clock: StageClock,
    seen: _Seen,
    *,
    config: ProcessConfig,
    model: SegmentationModel | ModelHost | None,
    sink: ArtifactSink | None,
) -> tuple[MeasuredSeries, dict[str, str]]:
    """One path for both modes: read the inputs in a child, predict in the model host (the model is
    loaded once per worker), measure and write in a second child. With nothing to predict (reference
    mode) the inputs are measured in the child that read them. Returns what was measured and where
    the sink stored each file (by kind)."""
    # the stages run in isolated children, forked from a server that has these loaded already: the
    # worker imports them (pydicom, highdicom, scipy: 0.5 s) only when it runs a series itself
    from pipeline.inputs import load_series_inputs
    from pipeline.series_stages import Writer, load_and_measure, measure_series

    uid = row.ct_series_instance_uid
    load = functools.partial(
        load_series_inputs, row=row, folder=tmp, fetch=config.fetch, reference_required=model is None
    )
    measure = functools.partial(
        measure_series,
        row=row,
        writer=Writer.of(row, model),
        files_to=os.path.join(tmp, "made") if sink is not None else None,
        iou_threshold=config.iou_threshold,
    )
    isolated = functools.partial(_isolated, clock=clock, config=config, series_uid=uid)
    if model is None:
        measured: MeasuredSeries = isolated(
            functools.partial(load_and_measure, load=load, measure=measure), first_stage=Stage.FETCH
        )
    else:
        inputs: SeriesInputs = isolated(load, first_stage=Stage.FETCH)
        seen.grid = GridSummary.of(inputs.ct.geometry)
        prediction = _predict(model, inputs, clock, os.path.join(tmp, "prediction.npy"), limits=config.limits)
        measured = isolated(
            functools.partial(measure, inputs=inputs, prediction=prediction), first_stage=Stage.MEASURE
        )
    seen.grid = measured.grid
    uris: dict[str, str] = {}
    if sink is not None:
        with clock.stage(Stage.SEG_WRITE):
            uris = {kind: sink(kind, uid, path) for kind, path in measured.files.items()}
    _log_done(uid, measured)
    return measured, uris


def _predict(
    model: SegmentationModel | ModelHost,
    inputs: SeriesInputs,
    clock: StageClock,
    path: str,
    *,
    limits: Limits,
) -> SavedPrediction:
    """Run the model on the series' CT and leave its answer in ``path`` for the measuring child: a
    mask on the CT grid, or probabilities on the model's grid, which that child brings to the CT grid.
    A :class:`ModelHost` runs it in its process, within the series' time and memory limits (see
    :mod:`pipeline.model_host`); a model object given directly runs here (tests, notebooks)."""
    with clock.stage(Stage.INFERENCE):
        if isinstance(model, ModelHost):
            assert inputs.hu_path is not None
            done = model.predict(
                inputs.ct,
                hu_path=inputs.hu_path,
                save_to=path,
                timeout_s=limits.timeout_s,
                memory_bytes=limits.memory_bytes,
            )
        else:
            ct, _ = inputs.load()
            done = predict_to_file(model, ct, path)
    # the model times its own steps: its resampling back to the CT grid is post-processing
    clock.seconds[Stage.INFERENCE] = done.inference_s
    clock.add(Stage.POSTPROCESS, done.postprocess_s)
    return done.prediction


def _isolated(
    fn: Callable[..., Any], *, clock: StageClock, config: ProcessConfig, series_uid: str, first_stage: Stage
) -> Any:
    """``fn(report=...)`` in a limited child process (see :mod:`pipeline.isolation`), or in this
    process when isolation is off; ``clock`` follows its stages and counts its seconds either way."""
    if config.isolate:
        return run_isolated(
            fn, series_uid=series_uid, limits=config.limits, first_stage=first_stage, clock=clock
        )
    clock.current = first_stage
    clock.start()
    result = fn(report=clock)
    clock.stop()
    return result


def _log_done(series_uid: str, measured: MeasuredSeries) -> None:
    counts = ", ".join(f"{len(s.nodes)} {s.source.value} nodes" for s in measured.sources)
    logger.info("series %s: %d slices, %s", series_uid, measured.grid.n_slices, counts)

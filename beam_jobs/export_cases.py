"""One case of ``lnq export-training`` in the Beam job: export it, keep its result, report it.

:func:`export_one` runs the case's isolated child (:func:`pipeline.training.export_case.export_case`,
the same fetch, decode and reference reader as ``lnq run``), then copies its two files into the
dataset atomically, removing the first again if the second copy fails: a failed case is never half
there. Its row of the case table and its error rows are kept in the result store as it finishes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import apache_beam as beam

import pipeline
from beam_jobs.lock import JobHeartbeat
from beam_jobs.store import KeptResult, ResultStore, copy_atomically, delete_quietly
from beam_jobs.transforms import report_progress
from pipeline.cohort.rows import validate_cohort_row
from pipeline.enums import SeriesStatus, Stage
from pipeline.errors import IsolatedFailure, PipelineError, SeriesError
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.isolation import Limits, run_isolated
from pipeline.outcome import GridSummary, SeriesIdentity, SeriesOutcome
from pipeline.outputs.rows import OutcomeRows, error_row
from pipeline.outputs.schemas import to_table
from pipeline.stage_clock import StageClock
from pipeline.training.cases import EXPORT_LABEL, PlannedCase, case_row
from pipeline.training.dataset import image_file, label_file
from pipeline.training.settings import KnownBackground

if TYPE_CHECKING:
    from pipeline.training.export_case import ExportedCase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    """Settings shared by every case of one export."""

    dataset: str
    """The dataset folder, ``OUTPUT/Dataset<NNN>_<NAME>`` (absolute, or gs://)."""
    fetch: FetchConfig
    background: KnownBackground
    limits: Limits
    work_dir: str | None
    test_annotation: str
    pipeline_version: str = pipeline.__version__

    def settings(self) -> dict[str, Any]:
        """What changes a case's files (and so the result store's key)."""
        return {
            "job": EXPORT_LABEL,
            "pipeline_version": self.pipeline_version,
            "partial_background": self.background.describe(),
            "test_annotation": self.test_annotation,
        }

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CaseDone:
    """What flows through the pipeline for one case (its rows are in the result store)."""

    series_uid: str
    status: str


def export_one(
    raw: Mapping[str, Any], planned: PlannedCase, config: ExportConfig
) -> tuple[SeriesOutcome, ExportedCase | None]:
    """Export one case into the dataset folder: its outcome (stage seconds included) and, when it
    is ``ok``, what its isolated child made. Every failure becomes the outcome's error, and a file
    of the case that was copied is removed again."""
    identity = SeriesIdentity.from_cohort(raw)
    uid = identity.ct_series_instance_uid
    clock = StageClock()
    grid = None
    try:
        row = validate_cohort_row(raw)
        # the case runs in an isolated child forked from a server that has its modules loaded: this
        # process imports them (pydicom, highdicom) only when it exports a case itself
        from pipeline.training.export_case import export_case

        with tempfile.TemporaryDirectory(prefix="lnq-", dir=config.work_dir) as tmp:
            exported: ExportedCase = run_isolated(
                functools.partial(
                    export_case, row=row, folder=tmp, fetch=config.fetch, background=config.background
                ),
                series_uid=uid,
                limits=config.limits,
                first_stage=Stage.FETCH,
                clock=clock,
            )
            grid = GridSummary.of(exported)
            with clock.stage(Stage.EXPORT):
                place_case(exported.image_path, exported.label_path, dataset=config.dataset, planned=planned)
    except Exception as exc:  # this case's failure, never the job's
        error = (
            exc.error
            if isinstance(exc, IsolatedFailure)
            else SeriesError.from_exception(exc, stage=clock.current, series_uid=uid)
        )
        log = logger.warning if isinstance(exc, (PipelineError, OSError)) else logger.exception
        log("case %s (series %s) failed at %s: %s", planned.case_id, uid, error.stage, exc)
        failed = SeriesOutcome.failed(
            identity,
            error,
            model=EXPORT_LABEL,
            pipeline_version=config.pipeline_version,
            seconds=clock.seconds,
            total_s=clock.total_s(),
            grid=grid,
        )
        return failed, None
    outcome = SeriesOutcome(
        identity=identity,
        model=EXPORT_LABEL,
        pipeline_version=config.pipeline_version,
        processed_at=dt.datetime.now(dt.timezone.utc),
        seconds=clock.seconds,
        total_s=clock.total_s(),
        grid=grid,
    )
    return outcome, exported


def place_case(image: str, label: str, *, dataset: str, planned: PlannedCase) -> None:
    """Copy a case's image and labels into the dataset, each atomically; when the second copy fails
    the first is removed, so the case is in the dataset whole or not at all."""
    targets = [
        (image, f"{dataset}/{image_file(planned.case_id, planned.split)}"),
        (label, f"{dataset}/{label_file(planned.case_id, planned.split)}"),
    ]
    placed = []
    try:
        for source, target in targets:
            copy_atomically(source, target)
            placed.append(target)
    except BaseException:
        delete_quietly(placed)
        raise


def case_rows(
    raw: Mapping[str, Any], planned: PlannedCase, outcome: SeriesOutcome, exported: ExportedCase | None
) -> OutcomeRows:
    """What the store keeps for a case: its row of the case table (the columns a worker knows) in
    the place of a series row, and its error rows (the ``errors`` table's schema)."""
    errors = [error_row(outcome, error) for error in outcome.errors]
    return OutcomeRows(series=case_row(raw, planned, outcome, exported), nodes=[], errors=errors)


def fits_case_rows(rows: OutcomeRows) -> None:
    """What a kept case must fit: a case row naming its series and status, and error rows."""
    if not isinstance(rows.series.get("ct_series_instance_uid"), str) or "status" not in rows.series:
        raise ValueError("a kept case names no series or status")
    to_table(rows.errors, "errors")


def case_store(dataset: str, key: str) -> ResultStore:
    """The export's kept cases: the result store, holding case rows."""
    return ResultStore(dataset, key, check=fits_case_rows)


def keep(store: ResultStore, rows: OutcomeRows) -> None:
    """Keep a case's result; a failure now also drops an earlier ``ok`` result of the case (a
    ``--fresh`` export, or one whose files went missing), so the case leaves the dataset."""
    store.write(KeptResult(rows))
    if rows.series["status"] != SeriesStatus.OK.value:
        delete_quietly([store.path(SeriesStatus.OK, str(rows.series["ct_series_instance_uid"]))])


class ExportCaseFn(beam.DoFn):
    """(cohort row, planned case) in, :class:`CaseDone` out; the case's rows go to the store. With
    ``lock_token`` (a job that runs without its launcher) each worker keeps the dataset's lock
    alive (:class:`~beam_jobs.lock.JobHeartbeat`)."""

    def __init__(
        self,
        config: ExportConfig,
        *,
        store: ResultStore,
        total: int,
        progress_dir: str | None = None,
        started: float | None = None,
        lock_token: str | None = None,
    ):
        self._config = config
        self._store = store
        self._total = total
        self._progress_dir = progress_dir
        self._started = started
        self._lock_token = lock_token

    def setup(self) -> None:
        if self._lock_token:  # the job holds the dataset's lock: its workers keep it alive
            JobHeartbeat.start(self._config.dataset, self._lock_token)

    def process(self, element: tuple[dict[str, Any], PlannedCase]) -> Iterator[CaseDone]:
        raw, planned = element
        outcome, exported = export_one(raw, planned, self._config)
        keep(self._store, case_rows(raw, planned, outcome, exported))  # kept now: a killed run keeps it
        report_progress(self._progress_dir, outcome, total=self._total, started=self._started)
        yield CaseDone(outcome.series_uid, outcome.status.value)


def dead_letter_to_case(
    bad: tuple[tuple[dict[str, Any], PlannedCase], tuple[Any, str, list[str]]],
    config: ExportConfig,
    store: ResultStore,
) -> CaseDone:
    """A crash that escaped :func:`export_one` (caught by ``with_exception_handling``) as the case's
    error row, kept in the store like any result."""
    (raw, planned), (exc_type, exc_repr, trace) = bad
    identity = SeriesIdentity.from_cohort(raw)
    logger.error("case %s crashed outside its handlers: %s", planned.case_id, "".join(trace[-3:]))
    error = dataclasses.replace(
        SeriesError.from_exception(
            RuntimeError(exc_repr), stage=Stage.UNEXPECTED, series_uid=identity.ct_series_instance_uid
        ),
        error_type=getattr(exc_type, "__name__", str(exc_type)),
    )
    outcome = SeriesOutcome.failed(
        identity, error, model=EXPORT_LABEL, pipeline_version=config.pipeline_version
    )
    keep(store, case_rows(raw, planned, outcome, None))
    return CaseDone(outcome.series_uid, outcome.status.value)

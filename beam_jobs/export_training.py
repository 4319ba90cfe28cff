"""The training export job: cohort rows in, an nnU-Net v2 raw dataset out.

Like ``lnq run``: the cohort is read and checked first, one writer holds the output (the lock of
``beam_jobs.lock``, on the dataset folder), each case runs in an isolated child
(:func:`pipeline.training.export_case.export_case`) and its result is kept in the result store as
it finishes, so a rerun skips finished cases (``--fresh`` redoes them); a crash outside the case's
handlers is a dead letter and an error row. A case's two files are copied into the dataset
atomically, and removed again if the second copy fails: a failed case is never half there.

The last step of the pipeline, fed by every case's result through a global combine, finishes the
dataset (:func:`finish_export`): it checks that every cohort row has a result, removes files of
cases that are not ``ok`` now, and writes ``splits_final.json``, ``cases.parquet``/``cases.csv``,
``errors.parquet`` and ``dataset.json`` (which lists only ``ok`` cases). It runs inside the job,
not after ``wait_until_finish()``, so a Dataflow job finishes its dataset itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions

import pipeline
from beam_jobs import lock
from beam_jobs.dataflow import is_dataflow
from beam_jobs.export_args import make_parser
from beam_jobs.lnq_run import (
    RunFailed,
    check_reachable,
    load_cohort_rows,
    normalise_output,
    pipeline_options,
    run_folder,
)
from beam_jobs.options import INTERRUPTED, UsageError, split_beam_args
from beam_jobs.store import (
    ResultStore,
    copy_atomically,
    delete_quietly,
    is_remote,
    manifest,
    write_atomically,
)
from beam_jobs.transforms import report_progress
from pipeline.cohort.rows import validate_cohort_row
from pipeline.enums import SeriesStatus, Stage
from pipeline.errors import IsolatedFailure, PipelineError
from pipeline.fetch.s5cmd import AWS_ENDPOINT, GCS_ENDPOINT, FetchConfig
from pipeline.fetch.s5cmd import check_config as check_fetch_config
from pipeline.isolation import GIB, Limits, run_isolated
from pipeline.outcome import GridSummary, SeriesError, SeriesIdentity, SeriesOutcome
from pipeline.outputs.rows import OutcomeRows, error_row
from pipeline.outputs.schemas import to_table
from pipeline.training.cases import CASE_ROW_FROM_WORKER, PlannedCase, case_table, plan_cases
from pipeline.training.dataset import (
    CASE_FOLDERS,
    Split,
    dataset_folder_name,
    dataset_json,
    image_file,
    label_file,
)
from pipeline.training.provenance import SeriesSource, dataset_provenance, idc_release, series_sources
from pipeline.training.settings import BackgroundRule, KnownBackground
from pipeline.training.splits import fold_of, patient_folds

if TYPE_CHECKING:
    from pipeline.training.export_case import ExportedCase

logger = logging.getLogger(__name__)

EXPORT_LABEL = "export-training"
"""The ``model`` column of the export's error rows (the errors table is ``lnq run``'s)."""
FINISH_FILES = ("dataset.json", "splits_final.json", "cases.parquet", "cases.csv", "errors.parquet")


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
class ExportSummary:
    """What an export did, read back from the dataset it finished."""

    n_cohort: int
    n_ok: int
    n_failed: int
    n_training: int
    n_test: int
    dataset: str


@dataclass(frozen=True)
class CaseDone:
    """What flows through the pipeline for one case (its rows are in the result store)."""

    series_uid: str
    status: str


# ---- one case -------------------------------------------------------------------------------


def export_one(
    raw: Mapping[str, Any], planned: PlannedCase, config: ExportConfig
) -> tuple[SeriesOutcome, ExportedCase | None]:
    """Export one case into the dataset folder: its outcome (stage seconds included) and, when it
    is ``ok``, what its isolated child made. Every failure becomes the outcome's error, and a file
    of the case that was copied is removed again."""
    start = time.perf_counter()
    identity = SeriesIdentity.from_cohort(raw)
    uid = identity.ct_series_instance_uid
    stage = Stage.COHORT
    seconds: dict[Stage, float] = {}
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
            )
            seconds.update(exported.seconds)
            grid = GridSummary(n_slices=exported.size_zyx[0], slice_spacing_mm=exported.spacing_mm[2])
            stage = Stage.EXPORT
            copy_start = time.perf_counter()
            place_case(exported.image_path, exported.label_path, dataset=config.dataset, planned=planned)
            seconds[Stage.EXPORT] = seconds.get(Stage.EXPORT, 0.0) + time.perf_counter() - copy_start
    except Exception as exc:  # this case's failure, never the job's
        error = (
            exc.error
            if isinstance(exc, IsolatedFailure)
            else SeriesError.from_exception(exc, stage=stage, series_uid=uid)
        )
        log = logger.warning if isinstance(exc, (PipelineError, OSError)) else logger.exception
        log("case %s (series %s) failed at %s: %s", planned.case_id, uid, error.stage, exc)
        failed = SeriesOutcome.failed(
            identity,
            error,
            model=EXPORT_LABEL,
            pipeline_version=config.pipeline_version,
            seconds=seconds,
            total_s=round(time.perf_counter() - start, 4),
            grid=grid,
        )
        return failed, None
    outcome = SeriesOutcome(
        identity=identity,
        model=EXPORT_LABEL,
        pipeline_version=config.pipeline_version,
        processed_at=dt.datetime.now(dt.timezone.utc),
        seconds=seconds,
        total_s=round(time.perf_counter() - start, 4),
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
    ok = outcome.status == SeriesStatus.OK and exported is not None
    row: dict[str, Any] = dict.fromkeys(CASE_ROW_FROM_WORKER)
    row.update(
        case_id=planned.case_id,
        status=outcome.status.value,
        split=planned.split.value,
        patient_id=outcome.identity.patient_id,
        study_instance_uid=outcome.identity.study_instance_uid,
        ct_series_instance_uid=outcome.series_uid,
        seg_series_instance_uid=_text(raw.get("seg_series_instance_uid")),
        annotation=outcome.identity.annotation,
        labels="partial" if planned.partial else "full",
        ct_series_url=_text(raw.get("ct_series_url")),
        seg_series_url=_text(raw.get("seg_series_url")),
        pipeline_version=outcome.pipeline_version,
        processed_at=outcome.processed_at,
        total_s=outcome.total_s,
        **{f"{stage.value}_s": outcome.seconds.get(stage) for stage in _TIMED},
    )
    if ok and exported is not None:
        z, y, x = exported.size_zyx
        row.update(
            image_file=image_file(planned.case_id, planned.split),
            label_file=label_file(planned.case_id, planned.split),
            n_slices=z,
            n_rows=y,
            n_columns=x,
            spacing_x_mm=exported.spacing_mm[0],
            spacing_y_mm=exported.spacing_mm[1],
            spacing_z_mm=exported.spacing_mm[2],
            lymph_node_voxels=exported.counts.lymph_node,
            background_voxels=exported.counts.background,
            ignore_voxels=exported.counts.ignore,
        )
    errors = [error_row(outcome, error) for error in outcome.errors]
    return OutcomeRows(series=row, nodes=[], errors=errors)


_TIMED = (Stage.FETCH, Stage.DECODE, Stage.REFERENCE, Stage.EXPORT)


def _text(value: Any) -> str | None:
    return None if value is None or value != value else str(value)


def keep(store: ResultStore, rows: OutcomeRows) -> None:
    """Keep a case's result; a failure now also drops an earlier ``ok`` result of the case (a
    ``--fresh`` export, or one whose files went missing), so the case leaves the dataset."""
    store.write(rows)
    if rows.series["status"] != SeriesStatus.OK.value:
        delete_quietly([store.path(SeriesStatus.OK, str(rows.series["ct_series_instance_uid"]))])


class ExportCaseFn(beam.DoFn):
    """(cohort row, planned case) in, :class:`CaseDone` out; the case's rows go to the store."""

    def __init__(
        self,
        config: ExportConfig,
        *,
        store: ResultStore,
        total: int,
        progress_dir: str | None = None,
        started: float | None = None,
    ):
        self._config = config
        self._store = store
        self._total = total
        self._progress_dir = progress_dir
        self._started = started

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


# ---- the dataset, once every case has a result ----------------------------------------------


class ExportIncomplete(Exception):
    """A cohort row has no result when the dataset is to be finished: nothing is finished."""


def finish_export(
    _done: int,
    *,
    config: ExportConfig,
    plan: Sequence[PlannedCase],
    store: ResultStore,
    sources: Mapping[str, SeriesSource],
    release: str,
    dataset_name: str,
) -> ExportSummary:
    """Write the dataset's own files from every case's stored result (see the module)."""
    dataset = config.dataset
    uids = [p.ct_series_instance_uid for p in plan]
    listed = store.listing()
    missing = store.missing(uids, listed=listed)
    if missing:
        raise ExportIncomplete(
            f"{len(missing)} of {len(uids)} cohort rows have no result (for example {missing[0]}); "
            "the dataset was not finished"
        )
    results = store.read(uids, listed=listed)
    unread = [
        uid for uid in uids if uid not in results or results[uid].series.get("ct_series_instance_uid") != uid
    ]
    if unread:
        raise ExportIncomplete(
            f"the stored result of {unread[0]} is unreadable; the dataset was not finished"
        )
    ok = [p for p in plan if results[p.ct_series_instance_uid].series["status"] == SeriesStatus.OK.value]
    training = [p for p in ok if p.split == Split.TRAIN]
    test = [p for p in ok if p.split == Split.TEST]
    kept = sorted(f for p in ok for f in (image_file(p.case_id, p.split), label_file(p.case_id, p.split)))
    _remove_stale_case_files(dataset, plan, kept)

    folds = patient_folds([(p.case_id, p.patient) for p in training])
    if not folds and training:
        logger.warning("fewer than two training patients: no cross-validation folds were written")
    rows = []
    folds_by_case = fold_of(folds)
    for p in plan:
        row = dict(results[p.ct_series_instance_uid].series)
        source = sources.get(p.ct_series_instance_uid)
        row.update(
            fold=folds_by_case.get(p.case_id),
            idc_viewer_url=source.idc_viewer_url if source else None,
            collection_id=source.collection_id if source else None,
            source_doi=source.source_doi if source else None,
            license=source.license if source else None,
        )
        rows.append(row)
    cases = case_table(rows)
    errors = to_table([e for uid in uids for e in results[uid].errors], "errors")
    written = ["cases.parquet", "cases.csv", "errors.parquet"]
    write_atomically(f"{dataset}/cases.parquet", _parquet_bytes(cases))
    write_atomically(f"{dataset}/cases.csv", _csv_bytes(cases))
    write_atomically(f"{dataset}/errors.parquet", _parquet_bytes(errors))
    if folds:
        write_atomically(f"{dataset}/splits_final.json", json.dumps(folds, indent=1).encode())
        written.append("splits_final.json")
    description = dataset_json(
        name=dataset_name,
        n_training=len(training),
        n_test=len(test),
        with_ignore=any(p.partial for p in training),
        provenance=dataset_provenance([sources.get(p.ct_series_instance_uid) for p in ok], release=release),
        export={
            **config.settings(),
            "labels": "partial cases: 1 the expert's nodes, 0 known background, 2 ignore; full: 0 and 1",
            "case_table": "cases.parquet",
            "folds": "splits_final.json: patient-level, seed 12345" if folds else None,
        },
    )
    write_atomically(f"{dataset}/dataset.json", json.dumps(description, indent=1).encode())
    written.append("dataset.json")
    _replace_export_manifest(dataset, kept + written)
    summary = ExportSummary(
        n_cohort=len(plan),
        n_ok=len(ok),
        n_failed=len(plan) - len(ok),
        n_training=len(training),
        n_test=len(test),
        dataset=dataset,
    )
    logger.info(
        "dataset finished: %d ok (%d training, %d test), %d failed of %d cases; %s",
        summary.n_ok,
        summary.n_training,
        summary.n_test,
        summary.n_failed,
        summary.n_cohort,
        dataset,
    )
    return summary


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _csv_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer)
    return buffer.getvalue()


def listed_case_files(dataset: str) -> set[str]:
    """The files in the dataset's case folders, relative to the dataset folder: one listing each."""
    found = set()
    for folder in CASE_FOLDERS:
        for meta in FileSystems.match([f"{dataset}/{folder}/*"])[0].metadata_list:
            found.add(
                meta.path[len(dataset) + 1 :] if is_remote(dataset) else os.path.relpath(meta.path, dataset)
            )
    return found


def _remove_stale_case_files(dataset: str, plan: Sequence[PlannedCase], kept: Sequence[str]) -> None:
    """Remove case files that must not be in the dataset now: those of cohort cases that are not
    ``ok`` (in either split: a case may have moved), and those an earlier export listed and this
    one does not. Files the project did not write are left, with a warning: nnU-Net counts them."""
    present = listed_case_files(dataset)
    ours = {
        f
        for p in plan
        for split in Split
        for f in (image_file(p.case_id, split), label_file(p.case_id, split))
    }
    earlier = set(manifest(dataset))
    stale = sorted((present & (ours | earlier)) - set(kept))
    if stale:
        logger.info(
            "removing %d case files that are not part of this export (failed or dropped cases)", len(stale)
        )
        delete_quietly(f"{dataset}/{name}" for name in stale)
    foreign = sorted(present - ours - earlier - set(kept))
    if foreign:
        logger.warning(
            "%d files in the dataset's case folders were not written by this export (for example %s); "
            "nnU-Net will count them",
            len(foreign),
            foreign[0],
        )


def _replace_export_manifest(dataset: str, files: list[str]) -> None:
    """The dataset's manifest (``_lnq/manifest.json``, read with ``beam_jobs.store.manifest``) lists
    exactly ``files``; files of the previous list that this one drops are removed."""
    previous = set(manifest(dataset))
    write_atomically(manifest_path(dataset), json.dumps({"files": sorted(files)}, indent=1).encode())
    gone = sorted(previous - set(files))
    if gone:
        delete_quietly(f"{dataset}/{name}" for name in gone)


def manifest_path(dataset: str) -> str:
    return f"{dataset}/_lnq/manifest.json"


# ---- the pipeline ---------------------------------------------------------------------------


def build(
    p: beam.Pipeline,
    pending: Sequence[tuple[dict[str, Any], PlannedCase]],
    *,
    config: ExportConfig,
    plan: Sequence[PlannedCase],
    store: ResultStore,
    sources: Mapping[str, SeriesSource],
    dataset_name: str,
    progress_dir: str | None,
) -> beam.PCollection:
    """Wire the export into ``p``; returns the finished dataset's summary (one element)."""
    fn = ExportCaseFn(config, store=store, total=len(pending), progress_dir=progress_dir, started=time.time())
    done, crashed = (
        p
        | "Cases" >> beam.Create(list(pending), reshuffle=False)
        | "Spread" >> beam.Reshuffle()
        | "Export" >> beam.ParDo(fn).with_exception_handling()
    )
    recovered = crashed | "DeadLetters" >> beam.Map(dead_letter_to_case, config, store)
    return (
        (done, recovered)
        | "Merge" >> beam.Flatten()
        | "AllCases" >> beam.combiners.Count.Globally()
        | "Finish"
        >> beam.Map(
            finish_export,
            config=config,
            plan=list(plan),
            store=store,
            sources=dict(sources),
            release=idc_release(),
            dataset_name=dataset_name,
        )
    )


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> ExportSummary:
    """Export the cohort; return the summary of the finished dataset."""
    args, beam_args = split_beam_args(make_parser(), list(argv or []))
    try:
        name = dataset_folder_name(args.dataset_id, args.dataset_name)
        background = KnownBackground(args.partial_background, args.air_below_hu, args.bone_above_hu)
        options = pipeline_options(beam_args, workers=args.workers, series_per_worker=args.series_per_worker)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.series_timeout <= 0 or args.series_memory_gb < 0 or args.workers < 1:
        raise UsageError(
            f"--series-timeout {args.series_timeout:g}, --series-memory-gb {args.series_memory_gb:g}, "
            f"--workers {args.workers}: expected a positive time, a memory limit >= 0 and >= 1 worker"
        )
    rows = load_cohort_rows(args.cohort, annotation=args.annotation, limit=args.limit)
    try:
        plan = plan_cases(rows, test_annotation=args.test_annotation)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    dataset = f"{normalise_output(args.output)}/{name}"
    _check_no_other_dataset_with_id(normalise_output(args.output), args.dataset_id, name)
    endpoint = args.s3_endpoint or (GCS_ENDPOINT if is_dataflow(options) else AWS_ENDPOINT)
    fetch = FetchConfig(
        endpoint_url=endpoint, timeout_s=args.fetch_timeout, extra_buckets=tuple(args.allow_bucket)
    )
    try:
        check_fetch_config(fetch)
    except PipelineError as exc:
        raise UsageError(exc.detail) from exc
    if background.rule == BackgroundRule.NONE and args.test_annotation == "full":
        logger.warning(
            "--partial-background none with --test-annotation full: the training cases have no "
            "background label at all (only full cases do, and they are the test set)"
        )
    is_local = options.view_as(StandardOptions).runner in StandardOptions.LOCAL_RUNNERS
    sources = series_sources(p.ct_series_instance_uid for p in plan)
    with run_folder(args.work_dir if is_local or args.work_dir else None) as work:
        config = ExportConfig(
            dataset=dataset,
            fetch=fetch,
            background=background,
            limits=Limits(
                timeout_s=args.series_timeout,
                memory_bytes=int(args.series_memory_gb * GIB) if args.series_memory_gb > 0 else None,
            ),
            work_dir=work if is_local else args.work_dir,
            test_annotation=args.test_annotation,
        )
        with lock.acquire(dataset):
            store = ResultStore(dataset, config.key())
            done = set() if args.fresh else _finished(store, dataset, plan)
            pending = [
                (row, p) for row, p in zip(rows, plan, strict=True) if p.ct_series_instance_uid not in done
            ]
            logger.info(
                "cohort: %d cases, %d already exported with these settings (skipped), %d to export; "
                "dataset: %s; settings %s",
                len(plan),
                len(plan) - len(pending),
                len(pending),
                dataset,
                config.key(),
            )
            if pending:
                check_reachable([row for row, _ in pending], fetch)
            progress = os.path.join(work, "progress") if is_local else None
            if progress:
                os.makedirs(progress)
            p = test_pipeline or beam.Pipeline(options=options)
            build(
                p,
                pending,
                config=config,
                plan=plan,
                store=store,
                sources=sources,
                dataset_name=args.dataset_name,
                progress_dir=progress,
            )
            try:
                p.run().wait_until_finish()
            except Exception as exc:  # the runner's own failure (or the finish step's), not a case's
                if INTERRUPTED.is_set():
                    raise KeyboardInterrupt from exc
                raise RunFailed(
                    f"the export failed: {_first_line(exc)}; finished cases are kept, run again to resume"
                ) from exc
            return read_summary(dataset, len(plan))


def _finished(store: ResultStore, dataset: str, plan: Sequence[PlannedCase]) -> set[str]:
    """Cases with an ``ok`` result for these settings whose two files are in the dataset (a case
    whose files were removed since is exported again)."""
    done = store.done()
    present = listed_case_files(dataset)
    return {
        p.ct_series_instance_uid
        for p in plan
        if p.ct_series_instance_uid in done
        and image_file(p.case_id, p.split) in present
        and label_file(p.case_id, p.split) in present
    }


def _check_no_other_dataset_with_id(output: str, dataset_id: int, name: str) -> None:
    """nnU-Net refuses an id shared by two dataset folders: say so before anything is written."""
    prefix = f"Dataset{dataset_id:03d}_"
    if is_remote(output):
        paths = [m.path for m in FileSystems.match([f"{output}/{prefix}*/**"])[0].metadata_list]
        folders = {path[len(output) + 1 :].split("/", 1)[0] for path in paths}
    else:
        folders = set(os.listdir(output)) if os.path.isdir(output) else set()
    others = sorted(f for f in folders if f.startswith(prefix) and f != name)
    if others:
        raise UsageError(
            f"{output} already holds {others[0]} with dataset id {dataset_id}; nnU-Net needs one folder "
            "per id: choose another --dataset-id or --output"
        )


def read_summary(dataset: str, n_cohort: int) -> ExportSummary:
    """The summary of a finished dataset, read from its case table."""
    with FileSystems.open(f"{dataset}/cases.parquet") as f:
        cases = pq.read_table(f).to_pylist()
    ok = [c for c in cases if c["status"] == SeriesStatus.OK.value]
    return ExportSummary(
        n_cohort=n_cohort,
        n_ok=len(ok),
        n_failed=len(cases) - len(ok),
        n_training=sum(c["split"] == Split.TRAIN.value for c in ok),
        n_test=sum(c["split"] == Split.TEST.value for c in ok),
        dataset=dataset,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

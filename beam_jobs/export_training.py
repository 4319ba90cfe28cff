"""The training export job: cohort rows in, an nnU-Net v2 raw dataset out.

Like ``lnq run``: the cohort is read and checked first, one writer holds the output (the lock of
``beam_jobs.lock``, on the dataset folder), each case runs in an isolated child
(:func:`pipeline.training.export_case.export_case`) and its result is kept in the result store as
it finishes, so a rerun skips finished cases (``--fresh`` redoes them); a crash outside the case's
handlers is a dead letter and an error row.

The last step of the pipeline, fed by every case's result through a global combine, finishes the
dataset (``beam_jobs.export_finish``): it writes ``dataset.json`` (which lists only ``ok`` cases), the
splits and the case table inside the job, not after ``wait_until_finish()``, so a Dataflow job
finishes its dataset itself. One case's work is ``beam_jobs.export_cases``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions, TestOptions

from beam_jobs.dataflow import is_dataflow
from beam_jobs.export_args import make_parser
from beam_jobs.export_cases import ExportCaseFn, ExportConfig, case_store, dead_letter_to_case
from beam_jobs.export_finish import ExportIncomplete, ExportSummary, FinishFn, listed_case_files, read_summary
from beam_jobs.launch import (
    Submitted,
    check_output,
    check_reachable,
    check_runner_setup,
    first_line,
    hand_over,
    load_cohort_rows,
    normalise_output,
    pipeline_options,
    run_job_here,
    submit_dry_run,
    take_lock,
    wait_for_job,
)
from beam_jobs.options import UsageError, split_beam_args
from beam_jobs.store import ResultStore
from beam_jobs.work_folder import run_folder
from pipeline.errors import PipelineError
from pipeline.fetch.s5cmd import AWS_ENDPOINT, GCS_ENDPOINT, FetchConfig
from pipeline.fetch.s5cmd import check_config as check_fetch_config
from pipeline.isolation import GIB, Limits
from pipeline.locations import is_remote
from pipeline.training.cases import PlannedCase, plan_cases
from pipeline.training.dataset import dataset_folder_name, image_file, label_file
from pipeline.training.provenance import SeriesSource, idc_release, series_sources
from pipeline.training.settings import BackgroundRule, KnownBackground

logger = logging.getLogger(__name__)

__all__ = ["ExportConfig", "ExportSummary", "build", "run"]


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
    lock_token: str,
    job_holds_lock: bool = False,
) -> beam.PCollection:
    """Wire the export into ``p``; returns the finished dataset's summary (one element).
    ``lock_token``: the run's lock, which the finish step checks; ``job_holds_lock``: the job runs
    without its launcher, so its workers keep the lock alive and the finish step releases it."""
    fn = ExportCaseFn(
        config,
        store=store,
        total=len(pending),
        progress_dir=progress_dir,
        started=time.time(),
        lock_token=lock_token if job_holds_lock else None,
    )
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
        >> beam.ParDo(
            FinishFn(
                config=config,
                plan=list(plan),
                store=store,
                sources=dict(sources),
                release=idc_release(),
                dataset_name=dataset_name,
                lock_token=lock_token,
                job_holds_lock=job_holds_lock,
            )
        )
    )


def run(
    argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None
) -> ExportSummary | Submitted:
    """Export the cohort: locally, to the end, returning the summary of the finished dataset; on a
    remote runner, submit the job (which finishes the dataset itself) and hand it the lock."""
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
    output = normalise_output(args.output)
    check_output(output)
    runner = options.view_as(StandardOptions).runner
    is_local = runner in StandardOptions.LOCAL_RUNNERS
    dry_run = bool(options.view_as(TestOptions).dry_run)
    check_runner_setup(
        options,
        runner,
        output=output,
        output_as_given=args.output,
        reads=[args.cohort],
        what="lnq export-training",
    )
    rows = load_cohort_rows(args.cohort, annotation=args.annotation, limit=args.limit)
    try:
        plan = plan_cases(rows, test_annotation=args.test_annotation)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    dataset = f"{output}/{name}"
    if not dry_run:
        _check_no_other_dataset_with_id(output, args.dataset_id, name)
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
        graph = functools.partial(
            build,
            test_pipeline or beam.Pipeline(options=options),
            config=config,
            plan=plan,
            sources=sources,
            dataset_name=args.dataset_name,
        )
        if dry_run:  # nothing is submitted: the dataset is not locked, nor looked at
            job = graph(
                list(zip(rows, plan, strict=True)),
                store=case_store(dataset, config.key()),
                progress_dir=None,
                lock_token="dry-run",
                job_holds_lock=True,
            ).pipeline
            return submit_dry_run(job, runner, what=f"export of {len(plan)} cohort rows")
        with take_lock(dataset) as held:
            store = case_store(dataset, config.key())
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
            job = graph(
                pending,
                store=store,
                progress_dir=progress,
                lock_token=held.token,
                job_holds_lock=not is_local,
            ).pipeline
            if not is_local:
                handed = hand_over(
                    job,
                    options,
                    held,
                    n_rows=len(plan),
                    output_as_given=f"{args.output.rstrip('/')}/{name}",
                    publishes="finishes the dataset",
                    wait=args.wait,
                )
                if isinstance(handed, Submitted):
                    return handed
                wait_for_job(handed, runner, dataset, held.token, resume="finished cases are kept")
                return read_summary(dataset, len(plan))
            run_job_here(
                job,
                otherwise=lambda exc: (
                    f"the export failed: {first_line(exc)}; finished cases are kept, run again to resume"
                ),
                ours=(ExportIncomplete,),
            )
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

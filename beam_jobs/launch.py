"""The launcher of ``lnq run``: check everything, take the output's lock, run or submit the job.

1. **Plan** (:func:`make_plan`): arguments, Beam options (validated as Beam would), the cohort,
   credentials, what the workers will run. Every mistake here is one line, exit 2, and nothing has
   been touched.
2. **Preflight**: the model loads (or, for a remote runner, exists), the bucket answers. Still
   before the lock: a failure leaves the output as it was.
3. **Lock** the output (``beam_jobs/lock.py``), check its bookkeeping, find what is already done.
4. **Run or submit** the job graph (``beam_jobs/job_graph.py``), whose last step publishes. Locally
   the launcher runs it, waits, and reads back the run's facts for the summary. Where a runner runs
   it without this process (Dataflow, a flex template's job file, a dry run), the launcher hands the
   lock to the job and returns a :class:`Submitted` saying what was submitted and where the tables
   will appear; with ``--wait`` it waits for a Dataflow job and summarises it too.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.utils.shared import Shared

from beam_jobs import credentials, lock
from beam_jobs.dataflow import GpuRequest, dataflow_args, is_dataflow, job_state, repo_setup_file
from beam_jobs.job_graph import build
from beam_jobs.options import INTERRUPTED, UsageError, split_beam_args
from beam_jobs.publish import (
    PublishRequest,
    RunFailed,
    check_bookkeeping,
    complete_publish,
)
from beam_jobs.run_args import make_parser
from beam_jobs.run_facts import RunSummary, read_run_facts
from beam_jobs.settings_key import run_key
from beam_jobs.store import OutsideOutput, ResultStore
from beam_jobs.transforms import check_model_reachable
from beam_jobs.work_folder import run_folder
from pipeline.errors import PipelineError
from pipeline.fetch.outcomes import short_cause
from pipeline.fetch.s5cmd import AWS_ENDPOINT, GCS_ENDPOINT, FetchConfig, probe_series
from pipeline.fetch.s5cmd import check_config as check_fetch_config
from pipeline.isolation import GIB, Limits
from pipeline.locations import is_bucket_url, is_gcs, is_remote
from pipeline.models.spec import ModelSpec, parse_model_spec
from pipeline.outputs.schemas import COHORT_SCHEMA
from pipeline.process import ProcessConfig
from pipeline.uids import uid_problem

logger = logging.getLogger(__name__)

LOCAL_RUNNER = "FnApiRunner"


@dataclass(frozen=True)
class Submitted:
    """A job handed to a runner that runs it without this process (exit code 0)."""

    message: str


@dataclass(frozen=True)
class RunPlan:
    """Everything checked before the output is touched."""

    output: str
    output_as_given: str
    rows: list[dict[str, Any]]
    options: PipelineOptions
    runner: str
    spec: ModelSpec | None
    fetch: FetchConfig
    limits: Limits
    work_dir: str | None
    iou_threshold: float
    fresh: bool
    report: bool
    wait: bool

    @property
    def is_local(self) -> bool:
        return self.runner in StandardOptions.LOCAL_RUNNERS

    @property
    def dry_run(self) -> bool:
        return bool(self.options.view_as(TestOptions).dry_run)


# ---- 1. the plan ---------------------------------------------------------------------------------


def load_cohort_rows(path: str | None, *, annotation: str, limit: int | None) -> list[dict[str, Any]]:
    """Cohort rows as plain dicts, from a Parquet file or the default LNQ query, checked before
    anything is touched: a missing file or column, a row without a CT series UID, duplicate CT
    series, an empty cohort or a non-positive limit is a :class:`UsageError`."""
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: expected a positive number of series")
    if path is None:
        from pipeline.cohort.query import select_cohort  # idc-index, DuckDB and pandas: only here

        table = select_cohort(annotation=annotation, limit=limit)
        where = f"the LNQ cohort ({annotation})"
    else:
        where = f"cohort {path}"
        try:
            with FileSystems.open(path) as f:
                table = pq.read_table(f)
        except Exception as exc:
            raise UsageError(f"{where} cannot be read: {first_line(exc)}") from exc
        missing = [n for n in COHORT_SCHEMA.names if n not in table.column_names]
        if missing:
            raise UsageError(f"{where} lacks columns {missing}")
        if limit is not None:
            table = table.slice(0, limit)
    rows = table.select(COHORT_SCHEMA.names).to_pylist()
    if not rows:
        raise UsageError(f"{where} has no rows{' after --limit' if limit else ''}: nothing to run")
    blank = [
        i
        for i, r in enumerate(rows)
        if not isinstance(r["ct_series_instance_uid"], str) or not r["ct_series_instance_uid"].strip()
    ]
    if blank:
        raise UsageError(
            f"{where}: {len(blank)} rows have no ct_series_instance_uid (the first is row {blank[0] + 1}); "
            "every row must name its CT series"
        )
    counts = collections.Counter(str(r["ct_series_instance_uid"]) for r in rows)
    duplicated = sorted(uid for uid, n in counts.items() if n > 1)
    if duplicated:
        raise UsageError(
            f"{where} lists {len(duplicated)} CT series more than once (for example {duplicated[0]}); "
            "each series must appear once"
        )
    return rows


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _names_mode(args: list[str]) -> bool:
    """The user named Beam's local running mode or worker count: theirs wins over --workers."""
    return any(a.split("=", 1)[0] in ("--direct_running_mode", "--direct_num_workers") for a in args)


def pipeline_options(
    beam_args: list[str], *, workers: int, gpu: str | None = None, series_per_worker: int = 2
) -> PipelineOptions:
    """Beam options; locally the in-process runner is named explicitly (no Prism download),
    on Dataflow GPU machines, bounded model copies and the code to ship are added
    (``beam_jobs.dataflow``). A ValueError for what cannot run."""
    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if runner is None:
        runner = LOCAL_RUNNER
        args.append(f"--runner={LOCAL_RUNNER}")
    elif canonical_runner(runner) != runner:  # checks by name must see what Beam will run
        runner = canonical_runner(runner)
        args.append(f"--runner={runner}")
    if runner in StandardOptions.LOCAL_RUNNERS and workers > 1 and not _names_mode(args):
        # threads: each series' work runs in isolated child processes already, and threads start
        # at once, share the loaded model and log without Beam's wrapping (multi_processing was
        # slower than one worker on 10 series here: bench/local_run.py)
        args += ["--direct_running_mode=multi_threading", f"--direct_num_workers={workers}"]
    if runner.endswith("DataflowRunner"):
        args = dataflow_args(
            args,
            gpu=GpuRequest.parse(gpu) if gpu else None,
            harness_threads=series_per_worker,
            setup_file=repo_setup_file(),
        )
    elif gpu:
        raise ValueError("--gpu asks Dataflow for GPU workers; locally use --device cuda")
    return PipelineOptions(args)


def canonical_runner(name: str) -> str:
    """A runner named as Beam accepts it (any case, ``Runner`` optional, Beam's dotted path: ``direct``,
    ``dataflow``) in Beam's own spelling (``DirectRunner``, ``DataflowRunner``); other names as given."""
    short = name.rsplit(".", 1)[-1] if name in StandardOptions.ALL_KNOWN_RUNNERS else name
    for known in StandardOptions.KNOWN_RUNNER_NAMES:
        if short.lower() in (known.lower(), known.lower().removesuffix("runner")):
            return known
    return name


_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def check_output(output: str) -> None:
    """A ``gs://`` output names a bucket and a folder; other schemes are refused."""
    if is_gcs(output):
        bucket, _, folder = output[len("gs://") :].partition("/")
        parts = folder.split("/") if folder else []
        if not _BUCKET.fullmatch(bucket) or ".." in parts or "" in parts:
            raise UsageError(f"--output {output}: expected gs://BUCKET/FOLDER with a valid bucket name")
    elif is_remote(output):
        raise UsageError(f"--output {output}: expected a local folder or gs://BUCKET/FOLDER")


def _check_beam_options(options: PipelineOptions, runner: str) -> None:
    """Beam's own validation, now rather than after the lock."""
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.runner import create_runner

    cloud = options.view_as(GoogleCloudOptions)
    locations = [cloud.temp_location, cloud.staging_location]
    if runner.endswith("DataflowRunner") and not any(is_gcs(p) for p in locations):
        # else Beam would try to make a default bucket of its own, over the network
        raise UsageError(
            "a Dataflow job needs --temp_location gs://BUCKET/FOLDER (terraform output temp_location); "
            f"got {cloud.temp_location or 'none'}"
        )
    try:
        errors = PipelineOptionsValidator(options, create_runner(runner)).validate()
    except ValueError as exc:
        raise UsageError(f"Beam options: {first_line(exc)}") from exc
    if errors:
        raise UsageError("Beam options: " + "; ".join(" ".join(e.split()) for e in errors))


def check_runner_setup(
    options: PipelineOptions,
    runner: str,
    *,
    output: str,
    output_as_given: str,
    reads: list[str | None],
    what: str,
) -> None:
    """What a job needs of its runner before anything is touched: a well-formed project id; a remote
    runner writes to Cloud Storage and passes Beam's own validation; only Dataflow's dry run checks
    a job without running it; credentials are prepared for whatever the launcher (or, for a dry
    run, only the reads) will touch. ``what``: the command, for messages."""
    credentials.check_project(options.view_as(GoogleCloudOptions).project)
    is_local = runner in StandardOptions.LOCAL_RUNNERS
    if not is_local and not is_gcs(output):
        raise UsageError(
            f"--output {output_as_given}: a {runner} job writes to Cloud Storage (gs://BUCKET/FOLDER)"
        )
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if dry_run and not runner.endswith("DataflowRunner"):  # any other runner would run the job
        raise UsageError(
            f"--dry_run: only Dataflow checks a job without running it; {runner} would run it (leave out "
            "--dry_run, or add --runner DataflowRunner)"
        )
    touched = list(reads)
    if not dry_run:
        touched.append(output)
        if not is_local:
            touched.append(options.view_as(GoogleCloudOptions).temp_location or "gs://")
    if credentials.needs_credentials(*touched):  # before Beam's validation: it may look at buckets
        credentials.prepare_credentials(what=f"{what} on {runner} with {output}")
    if not is_local:
        _check_beam_options(options, runner)


def make_plan(argv: list[str]) -> RunPlan:
    args, beam_args = split_beam_args(make_parser(), list(argv))
    output = normalise_output(args.output)
    check_output(output)
    if not 0.0 < args.iou_threshold <= 1.0:
        raise UsageError(f"--iou-threshold {args.iou_threshold:g}: expected an IoU in (0, 1]")
    gpu = (args.gpu or "").strip() or None
    try:
        spec = parse_model_spec(
            args.model,
            device=worker_device(args.device, gpu=gpu),
            checkpoint=args.checkpoint,
            step_size=args.step_size,
            tta=args.tta,
            folds=tuple(int(f) if f.isdigit() else f for f in (args.folds or ())),
            trust_code=args.trust_model_code,
        )
        options = pipeline_options(
            beam_args, workers=args.workers, gpu=gpu, series_per_worker=args.series_per_worker
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    runner = options.view_as(StandardOptions).runner or LOCAL_RUNNER
    if args.series_timeout <= 0 or args.series_memory_gb < 0 or args.workers < 1:
        raise UsageError(
            f"--series-timeout {args.series_timeout:g}, --series-memory-gb {args.series_memory_gb:g}, "
            f"--workers {args.workers}: expected a positive time, a memory limit >= 0 and >= 1 worker"
        )
    if runner not in StandardOptions.LOCAL_RUNNERS and spec is not None and not is_gcs(spec.path):
        raise UsageError(
            f"--model {args.model}: a {runner} job's workers read the model from Cloud Storage (gs://...)"
        )
    check_runner_setup(
        options,
        runner,
        output=output,
        output_as_given=args.output,
        reads=[args.cohort, None if spec is None else spec.path],
        what="lnq run",
    )
    rows = load_cohort_rows(args.cohort, annotation=args.annotation, limit=args.limit)
    fetch = FetchConfig(
        endpoint_url=args.s3_endpoint or (GCS_ENDPOINT if is_dataflow(options) else AWS_ENDPOINT),
        timeout_s=args.fetch_timeout,
        extra_buckets=tuple(args.allow_bucket),
    )
    try:
        check_fetch_config(fetch)  # a refused endpoint or bucket name is the user's to fix
    except PipelineError as exc:
        raise UsageError(exc.detail) from exc
    return RunPlan(
        output=output,
        output_as_given=args.output.rstrip("/") or args.output,
        rows=rows,
        options=options,
        runner=runner,
        spec=spec,
        fetch=fetch,
        limits=Limits(
            timeout_s=args.series_timeout,
            memory_bytes=int(args.series_memory_gb * GIB) if args.series_memory_gb > 0 else None,
        ),
        work_dir=args.work_dir,
        iou_threshold=args.iou_threshold,
        fresh=args.fresh,
        report=args.report,
        wait=args.wait,
    )


def worker_device(device: str, *, gpu: str | None) -> str:
    """The model's device on the workers: with ``--gpu``, ``auto`` means the GPU or a failed series
    (a worker whose torch cannot see its GPU must not run on the CPU unnoticed)."""
    return "cuda" if gpu and device == "auto" else device


def normalise_output(output: str) -> str:
    return output.rstrip("/") if is_remote(output) else os.path.abspath(output)


# ---- 2. preflight --------------------------------------------------------------------------------

PROBED_SERIES = 5


def check_reachable(rows: list[dict[str, Any]], fetch: FetchConfig) -> None:
    """Fail fast when the bucket cannot be reached at all: list the first remote series (up to
    five, until one answers); when every one fails with the same error, nothing is the series'
    fault, and retrying the whole cohort would take hours."""
    problems = []
    for row in rows:
        url = row.get("ct_series_url")
        if not is_bucket_url(url):
            continue
        try:
            problem = probe_series(str(url), series_uid=str(row["ct_series_instance_uid"]), config=fetch)
        except PipelineError:
            continue  # a bad row: its own error row will say so
        if problem is None:
            return
        problems.append(short_cause(problem))  # the root cause: the same for every series when offline
        if len(problems) == PROBED_SERIES:
            break
    if problems and len(problems) == min(PROBED_SERIES, len(rows)) and len(set(problems)) == 1:
        raise RunFailed(
            f"no series could be fetched from {fetch.endpoint_url} ({problems[0]}); is the network "
            f"reachable? Without internet, {DEMO_HINT}"
        )


DEMO_HINT = "`make demo` (or `lnq demo --output DIR`) runs the whole job on phantoms, offline"


def preflight(plan: RunPlan, rows: list[dict[str, Any]], shared: Shared) -> None:
    """What would fail every series of ``rows``: the model (loaded here when the job runs here; on a
    remote runner it must at least exist), the bucket. On an output with nothing kept yet this runs
    before the lock is taken, so a run that cannot start leaves nothing behind; else once the lock
    shows what is pending, and only when something is (a resume that only publishes needs neither)."""
    if plan.spec is not None:
        check_model_reachable(plan.spec, shared)
    if not plan.dry_run:
        check_reachable(rows, plan.fetch)


# ---- 3. and 4. lock, then run or submit ------------------------------------------------------------


def _lock_job_state(job: lock.JobHandle) -> str | None:
    return job_state(job.project, job.region, job.job_id or "")


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary | Submitted:
    """Run the job (locally: to the end, returning the published run's summary) or submit it."""
    started = dt.datetime.now(dt.timezone.utc)
    plan = make_plan(list(argv or []))
    shared = Shared()
    work_base = plan.work_dir if plan.is_local or plan.work_dir else None
    with run_folder(work_base) as work:
        config = ProcessConfig(
            fetch=plan.fetch,
            work_dir=work if plan.is_local else plan.work_dir,
            model=plan.spec,
            limits=plan.limits,
            iou_threshold=plan.iou_threshold,
        )
        key, _ = run_key(config)
        if plan.dry_run:  # nothing is submitted: the output is not locked, nor looked at
            preflight(plan, plan.rows, shared)
            return _dry_run(plan, config, key, started, test_pipeline, shared)
        new_output = not plan.fresh and not ResultStore(plan.output, key).done()
        if new_output or plan.fresh:
            preflight(plan, plan.rows, shared)
        with take_lock(plan.output) as held:
            try:
                check_bookkeeping(plan.output)
            except OutsideOutput as exc:
                raise RunFailed(f"{exc}; nothing was touched") from exc
            if complete_publish(plan.output):
                logger.warning("completed the publish of an earlier run that was interrupted")
            store = ResultStore(plan.output, key)
            pending = _pending(plan, store)
            if pending and not (new_output or plan.fresh):
                preflight(plan, pending, shared)
            request = _request(plan, config, key, started, held.token)
            p = test_pipeline or beam.Pipeline(options=plan.options)
            progress = os.path.join(work, "progress") if plan.is_local else None
            if progress:
                os.makedirs(progress)
            build(
                p,
                pending,
                config=config,
                store=store,
                request=request,
                progress_dir=progress,
                shared=shared,
                job_holds_lock=not plan.is_local,
            )
            if plan.is_local:
                return _run_here(p, plan, request)
            return _submit(p, plan, request, held)


def take_lock(output: str) -> lock.OutputLock:
    """The output's lock; a lock that cannot be written (a full disk, no permission) is one line."""
    try:
        return lock.acquire(output, job_state=_lock_job_state)
    except OSError as exc:
        raise RunFailed(
            f"output {output}: its lock cannot be written ({exc.strerror or exc}); nothing was run"
        ) from exc


def _pending(plan: RunPlan, store: ResultStore) -> list[dict[str, Any]]:
    """The cohort rows to process: all with ``--fresh``; else those without a reusable result."""
    uids = [str(r["ct_series_instance_uid"]) for r in plan.rows]
    if plan.fresh:
        reusable: set[str] = set()
        redo: dict[str, str] = {}
    else:
        reusable, redo = store.reusable([u for u in uids if uid_problem(u) is None])
    for uid, why in sorted(redo.items())[:5]:
        logger.info("series %s is redone: %s", uid, why)
    if len(redo) > 5:
        logger.info("... and %d more kept results are redone for the same reasons", len(redo) - 5)
    pending = [r for r in plan.rows if str(r["ct_series_instance_uid"]) not in reusable]
    logger.info(
        "cohort: %d series, %d already done with these settings (skipped), %d to process; "
        "output: %s; settings %s",
        len(plan.rows),
        len(plan.rows) - len(pending),
        len(pending),
        plan.output,
        store.key,
    )
    return pending


def _request(
    plan: RunPlan, config: ProcessConfig, key: str, started: dt.datetime, token: str
) -> PublishRequest:
    return PublishRequest(
        output=plan.output,
        output_as_given=plan.output_as_given,
        settings_key=key,
        cohort_uids=tuple(str(r["ct_series_instance_uid"]) for r in plan.rows),
        model=config.model_label,
        pipeline_version=config.pipeline_version,
        started_at=started.isoformat(timespec="seconds"),
        token=token,
        report=plan.report,
    )


def _our_failure(exc: BaseException, ours: tuple[type[BaseException], ...] = ()) -> BaseException | None:
    """The project's own error (or one of ``ours``), or an interruption, inside what a runner
    raised (Beam wraps a DoFn's exception)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (RunFailed, lock.OutputLocked, OutsideOutput, KeyboardInterrupt, *ours)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def run_job_here(
    p: beam.Pipeline, *, otherwise: Callable[[BaseException], str], ours: tuple[type[BaseException], ...] = ()
) -> None:
    """Run ``p`` in this process to its end. A failure is one line: the project's own error (or one
    of ``ours``) as it said it, without Beam's wrapping; any other is ``otherwise(exc)``; an
    interruption stays one."""
    try:
        p.run().wait_until_finish()
    except Exception as exc:  # the runner's own failure, or the last step's: a series' failures are rows
        if INTERRUPTED.is_set():  # Beam wrapped the interruption of a DoFn it was running
            raise KeyboardInterrupt from exc
        found = _our_failure(exc, ours)
        if isinstance(found, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        if found is not None:
            raise RunFailed(_strip_beam_context(str(found))) from exc
        raise RunFailed(otherwise(exc)) from exc


def _run_here(p: beam.Pipeline, plan: RunPlan, request: PublishRequest) -> RunSummary:
    run_job_here(
        p,
        otherwise=lambda exc: (
            f"the job failed: {first_line(exc)}; finished series are kept, the published tables are unchanged"
        ),
    )
    return _published_summary(plan, request)


def _strip_beam_context(message: str) -> str:
    """A DoFn's message without what Beam appends (``[while running 'Publish']``)."""
    return re.sub(
        r"\s*\[while running '[^']*'\]", "", message.strip().splitlines()[0] if message.strip() else message
    )


def _published_summary(plan: RunPlan, request: PublishRequest) -> RunSummary:
    summary = read_run_facts(plan.output)
    if summary is None or summary.token != request.token:
        raise RunFailed(
            f"the job ended but its tables were not published to {plan.output_as_given}; run again"
        )
    return summary


def _submit(
    p: beam.Pipeline, plan: RunPlan, request: PublishRequest, held: lock.OutputLock
) -> RunSummary | Submitted:
    """Hand the job to its runner and the lock to the job."""
    tables = f"{plan.output_as_given}/series/, nodes/, errors/ and measurements/"
    handed = hand_over(
        p,
        plan.options,
        held,
        n_rows=len(plan.rows),
        output_as_given=plan.output_as_given,
        publishes=f"publishes {tables}",
        wait=plan.wait,
    )
    if isinstance(handed, Submitted):
        return handed
    wait_for_job(handed, plan.runner, plan.output, request.token, resume="finished series are kept")
    return _published_summary(plan, request)


def hand_over(
    p: beam.Pipeline,
    options: PipelineOptions,
    held: lock.OutputLock,
    *,
    n_rows: int,
    output_as_given: str,
    publishes: str,
    wait: bool,
) -> Submitted | beam.runners.runner.PipelineResult:
    """Submit ``p`` to a runner that runs it without this process and hand the output's lock to
    the job (its workers keep it, its last step releases it). A :class:`Submitted` when this
    process does not wait (a flex template's job file, ``--no-wait``); else the job's result, to
    wait for with :func:`wait_for_job`. ``publishes``: what the job's last step does."""
    runner = options.view_as(StandardOptions).runner
    try:
        result = p.run()
    except Exception as exc:  # refused: bad project, no permission, quota...
        raise RunFailed(f"{runner} did not take the job: {first_line(exc)}; nothing was submitted") from exc
    cloud = options.view_as(GoogleCloudOptions)
    job_id = _job_id(result)
    held.hand_to_job(
        lock.JobHandle(
            runner=runner,
            handed_at=lock.utc_now(),
            job_id=job_id,
            job_name=cloud.job_name,
            project=cloud.project,
            region=cloud.region,
        )
    )
    if cloud.template_location:
        return Submitted(
            f"wrote the job file {cloud.template_location} ({n_rows} cohort rows); the job holds the lock "
            f"of {output_as_given} and {publishes} as its last step"
        )
    if not wait:
        return Submitted(
            f"submitted {runner} job {job_id} ({n_rows} cohort rows); it {publishes} as its last step"
        )
    return result


def _job_id(result: beam.runners.runner.PipelineResult) -> str | None:
    """A Dataflow job's id; None for a job file (a template) or a runner without ids."""
    return result.job_id() if getattr(result, "has_job", False) else None  # type: ignore[attr-defined]


def wait_for_job(
    result: beam.runners.runner.PipelineResult, runner: str, output: str, token: str, *, resume: str
) -> None:
    """Wait for a submitted job; one that does not end DONE is a :class:`RunFailed` (and its lock,
    which it can no longer release, is released here)."""
    job_id = _job_id(result)
    logger.info("waiting for %s job %s", runner, job_id)
    try:
        state = result.wait_until_finish()
    except Exception as exc:
        state = f"failed ({first_line(exc)})"
    if str(state).rsplit(".", 1)[-1] != "DONE":
        lock.release_token(output, token)  # the job is over: its lock goes with it
        raise RunFailed(f"{runner} job {job_id} ended {state}; {resume}: run again to resume")


def _dry_run(
    plan: RunPlan,
    config: ProcessConfig,
    key: str,
    started: dt.datetime,
    test_pipeline: beam.Pipeline | None,
    shared: Shared,
) -> Submitted:
    """Build the whole job and hand it to the runner's dry run: checked, not submitted."""
    request = _request(plan, config, key, started, token="dry-run")
    p = test_pipeline or beam.Pipeline(options=plan.options)
    store = ResultStore(plan.output, key)
    build(
        p,
        plan.rows,
        config=config,
        store=store,
        request=request,
        progress_dir=None,
        shared=shared,
        job_holds_lock=True,
    )
    return submit_dry_run(p, plan.runner, what=f"job for {len(plan.rows)} cohort rows")


def submit_dry_run(p: beam.Pipeline, runner: str, *, what: str) -> Submitted:
    """Hand ``p`` to the runner's dry run (Dataflow's: built and checked, not submitted); ``what``
    names the job in the line printed."""
    try:
        p.run()
    except Exception as exc:
        raise RunFailed(f"{runner} dry run failed: {first_line(exc)}") from exc
    return Submitted(f"dry run: the {runner} {what} was built and checked; nothing was submitted")


def as_summary_line(outcome: RunSummary | Submitted) -> str:
    """The last line ``lnq run`` prints."""
    if isinstance(outcome, Submitted):
        return outcome.message
    report = f"; report {outcome.report}" if outcome.report else ""
    rate = outcome.series_per_hour
    speed = f" in {_duration(outcome.wall_s)} ({rate:.0f} series/h)" if rate and outcome.wall_s >= 1 else ""
    return (
        f"{outcome.n_ok} ok, {outcome.n_failed} failed of {outcome.n_series} series{speed}; "
        f"{outcome.nodes_text}; tables in {outcome.output}{report}"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

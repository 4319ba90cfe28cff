"""The LNQ job: cohort rows in, series/nodes/errors Parquet tables out.

Reads a cohort (a Parquet file from ``lnq cohort``, or the default LNQ query on
idc-index's bundled index), spreads the series over workers, processes each
one with :func:`pipeline.process.process_series`, and writes the three tables.
Crashes that escape the per-series handlers go to a dead-letter output and are
written as error rows, so every cohort row ends in ``series/`` exactly once.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.utils.shared import Shared

import pipeline
from beam_jobs import lock
from beam_jobs.dataflow import GpuRequest, dataflow_args, is_dataflow, repo_setup_file
from beam_jobs.options import INTERRUPTED, UsageError, split_beam_args
from beam_jobs.run_args import make_parser
from beam_jobs.store import (
    TABLE_FILE,
    ResultMissing,
    ResultStore,
    add_to_manifest,
    complete_publish,
    iter_results,
    publish,
    run_key,
)
from beam_jobs.transforms import (
    OutputFileSink,
    ProcessSeriesFn,
    SeriesDone,
    check_model_reachable,
    dead_letter_to_result,
)
from pipeline.errors import PipelineError
from pipeline.fetch.s5cmd import AWS_ENDPOINT, GCS_ENDPOINT, FetchConfig, probe_series
from pipeline.fetch.s5cmd import check_config as check_fetch_config
from pipeline.isolation import GIB, Limits
from pipeline.models.spec import parse_model_spec
from pipeline.outputs.schemas import COHORT_SCHEMA, TABLES
from pipeline.process import ProcessConfig

logger = logging.getLogger(__name__)

LOCAL_RUNNER = "FnApiRunner"


@dataclass(frozen=True)
class RunSummary:
    """What a run did, read back from its own output."""

    n_cohort: int
    n_ok: int
    n_failed: int
    n_nodes: int
    output: str
    report: str | None = None


def load_cohort_rows(path: str | None, *, annotation: str, limit: int | None) -> list[dict[str, Any]]:
    """Cohort rows as plain dicts, from a Parquet file or the default LNQ query, checked before
    anything is touched: a missing file or column, duplicate CT series, an empty cohort or a
    non-positive limit is a :class:`UsageError`."""
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
            raise UsageError(f"{where} cannot be read: {_first_line(exc)}") from exc
        missing = [n for n in COHORT_SCHEMA.names if n not in table.column_names]
        if missing:
            raise UsageError(f"{where} lacks columns {missing}")
        if limit is not None:
            table = table.slice(0, limit)
    rows = table.select(COHORT_SCHEMA.names).to_pylist()
    if not rows:
        raise UsageError(f"{where} has no rows{' after --limit' if limit else ''}: nothing to run")
    counts = collections.Counter(str(r["ct_series_instance_uid"]) for r in rows)
    duplicated = sorted(uid for uid, n in counts.items() if n > 1)
    if duplicated:
        raise UsageError(
            f"{where} lists {len(duplicated)} CT series more than once (for example {duplicated[0]}); "
            "each series must appear once"
        )
    return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_table(output: str, table: str) -> pa.Table:
    """Read one output table back (local or gs://)."""
    paths = sorted(m.path for m in FileSystems.match([f"{output}/{table}/*.parquet"])[0].metadata_list)
    parts = []
    for path in paths:
        with FileSystems.open(path) as f:
            parts.append(pq.read_table(f, schema=TABLES[table]))
    return pa.concat_tables(parts) if parts else TABLES[table].empty_table()


def _names_mode(args: list[str]) -> bool:
    """The user named Beam's local running mode or worker count: theirs wins over --workers."""
    return any(a.split("=", 1)[0] in ("--direct_running_mode", "--direct_num_workers") for a in args)


def pipeline_options(
    beam_args: list[str], *, workers: int, gpu: str | None = None, series_per_worker: int = 2
) -> PipelineOptions:
    """Beam options; locally the in-process runner is named explicitly (no Prism download),
    on Dataflow GPU workers and bounded model copies are added (``beam_jobs.dataflow``)."""
    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if runner is None:
        runner = LOCAL_RUNNER
        args.append(f"--runner={LOCAL_RUNNER}")
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


class ProcessCohort(beam.PTransform):
    """Cohort rows in; one :class:`~beam_jobs.transforms.SeriesDone` per row out, crashes
    included (their rows kept in the store, when one is given)."""

    def __init__(self, fn: ProcessSeriesFn, *, config: ProcessConfig, store: ResultStore | None = None):
        super().__init__()
        self._fn = fn
        self._config = config
        self._store = store

    def expand(self, rows):  # type: ignore[no-untyped-def]
        results, crashed = (
            rows | "Spread" >> beam.Reshuffle() | "Process" >> beam.ParDo(self._fn).with_exception_handling()
        )
        recovered = crashed | "DeadLetters" >> beam.Map(
            lambda bad, *args: SeriesDone.of(dead_letter_to_result(bad, *args)),
            self._config.pipeline_version,
            self._config.model_label,
            self._store,
        )
        return (results, recovered) | "Merge" >> beam.Flatten()


def build(
    p: beam.Pipeline,
    rows: list[dict[str, Any]],
    *,
    output: str,
    config: ProcessConfig,
    store: ResultStore,
    progress_dir: str | None,
    output_as_given: str | None = None,
    shared: Shared | None = None,
) -> beam.PCollection:
    """Wire the job into ``p``: every series' result is kept in ``store`` as it finishes, its
    SEG, SR and QC picture go to ``OUTPUT/seg/``, ``sr/`` and ``qc/``. Returns what each series did
    (for tests)."""
    sink = OutputFileSink(output, output_as_given or output)
    fn = ProcessSeriesFn(
        config,
        total=len(rows),
        progress_dir=progress_dir,
        sink=sink,
        shared=shared,
        store=store,
        started=time.time(),
    )
    return (
        p
        | "Cohort" >> beam.Create(rows, reshuffle=False)
        | "ProcessCohort" >> ProcessCohort(fn, config=config, store=store)
    )


def normalise_output(output: str) -> str:
    return output.rstrip("/") if "://" in output else os.path.abspath(output)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Run the job and publish its tables; return the summary of the published run."""
    started = dt.datetime.now(dt.timezone.utc)
    args, beam_args = split_beam_args(make_parser(), list(argv or []))
    output = normalise_output(args.output)
    try:
        spec = parse_model_spec(
            args.model,
            device=args.device,
            checkpoint=args.checkpoint,
            step_size=args.step_size,
            tta=args.tta,
            folds=tuple(int(f) if f.isdigit() else f for f in (args.folds or ())),
            trust_code=args.trust_model_code,
        )
        options = pipeline_options(
            beam_args, workers=args.workers, gpu=args.gpu, series_per_worker=args.series_per_worker
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    rows = load_cohort_rows(args.cohort, annotation=args.annotation, limit=args.limit)
    endpoint = args.s3_endpoint or (GCS_ENDPOINT if is_dataflow(options) else AWS_ENDPOINT)
    is_local = options.view_as(StandardOptions).runner in StandardOptions.LOCAL_RUNNERS
    fetch = FetchConfig(
        endpoint_url=endpoint, timeout_s=args.fetch_timeout, extra_buckets=tuple(args.allow_bucket)
    )
    if args.series_timeout <= 0 or args.series_memory_gb < 0 or args.workers < 1:
        raise UsageError(
            f"--series-timeout {args.series_timeout:g}, --series-memory-gb {args.series_memory_gb:g}, "
            f"--workers {args.workers}: expected a positive time, a memory limit >= 0 and >= 1 worker"
        )
    try:
        check_fetch_config(fetch)  # a refused endpoint or bucket name is the user's to fix
    except PipelineError as exc:
        raise UsageError(exc.detail) from exc
    with run_folder(args.work_dir if is_local or args.work_dir else None) as work:
        config = ProcessConfig(
            fetch=fetch,
            work_dir=work if is_local else args.work_dir,
            pipeline_version=pipeline.__version__,
            model=spec,
            limits=Limits(
                timeout_s=args.series_timeout,
                memory_bytes=int(args.series_memory_gb * GIB) if args.series_memory_gb > 0 else None,
            ),
        )
        key, settings = run_key(config)
        with lock.acquire(output) as held:
            if complete_publish(output):
                logger.warning("completed the publish of an earlier run that was interrupted")
            store = ResultStore(output, key)
            done = set() if args.fresh else store.done()
            pending = [r for r in rows if str(r["ct_series_instance_uid"]) not in done]
            logger.info(
                "cohort: %d series, %d already done with these settings (skipped), %d to process; "
                "output: %s; settings %s",
                len(rows),
                len(rows) - len(pending),
                len(pending),
                output,
                key,
            )
            if pending:
                shared = Shared()
                if spec is not None:
                    check_model_reachable(spec, shared)  # fail fast, before any series
                check_reachable(pending, fetch)
                p = test_pipeline or beam.Pipeline(options=options)
                progress = os.path.join(work, "progress") if is_local else None
                if progress:
                    os.makedirs(progress)
                build(
                    p,
                    pending,
                    output=output,
                    config=config,
                    store=store,
                    progress_dir=progress,
                    output_as_given=args.output,
                    shared=shared,
                )
                try:
                    p.run().wait_until_finish()
                except Exception as exc:  # the runner's own failure, not a series' (those are rows)
                    if INTERRUPTED.is_set():  # Beam wrapped the interruption of a DoFn it was running
                        raise KeyboardInterrupt from exc
                    raise RunFailed(
                        f"the job failed: {_first_line(exc)}; finished series are kept, "
                        "the published tables are unchanged"
                    ) from exc
            held.ensure_held()  # a run whose lock was taken over must not publish
            summary = publish_run(output, rows, store)
            if args.report:
                summary = dataclasses.replace(summary, report=write_run_report(output, started))
            return summary


def write_run_report(output: str, started: dt.datetime | None = None) -> str:
    """The run report (with the run's wall time when ``started`` is given); its files join the
    manifest of what the project wrote."""
    from beam_jobs.report import write_report_for_output

    if not FileSystems.exists(f"{output}/series/{TABLE_FILE}"):
        raise UsageError(f"{output} has no published tables (series/{TABLE_FILE}); is it a run's output?")
    info = None
    if started is not None:
        finished = dt.datetime.now(dt.timezone.utc)
        info = {
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": finished.isoformat(timespec="seconds"),
            "wall_s": (finished - started).total_seconds(),
        }
    index = write_report_for_output(output, info)
    add_to_manifest(output, [m.path for m in FileSystems.match([f"{output}/report/**"])[0].metadata_list])
    return index


PROBED_SERIES = 5


def check_reachable(rows: list[dict[str, Any]], fetch: FetchConfig) -> None:
    """Fail fast when the bucket cannot be reached at all: list the first remote series (up to
    five, until one answers); when every one fails with the same error, nothing is the series'
    fault, and retrying the whole cohort would take hours."""
    problems = []
    for row in rows:
        url = row.get("ct_series_url")
        if not isinstance(url, str) or not url.startswith(("s3://", "gs://")):
            continue
        try:
            problem = probe_series(url, series_uid=str(row["ct_series_instance_uid"]), config=fetch)
        except PipelineError:
            continue  # a bad row: its own error row will say so
        if problem is None:
            return
        series_part = url.rstrip("*").rstrip("/").rsplit("/", 1)[-1]  # the same error names its series
        problems.append(problem.replace(series_part, "<series>") if series_part else problem)
        if len(problems) == PROBED_SERIES:
            break
    if problems and len(problems) == min(PROBED_SERIES, len(rows)) and len(set(problems)) == 1:
        raise RunFailed(
            f"no series could be fetched from {fetch.endpoint_url}: {problems[0]}; is the network reachable?"
        )


def publish_run(output: str, rows: list[dict[str, Any]], store: ResultStore) -> RunSummary:
    """Check that every cohort row has exactly one result, then publish the tables, streaming
    the results from the store (a cohort's rows are never all in memory at once)."""
    uids = sorted({str(r["ct_series_instance_uid"]) for r in rows})
    listed = store.listing()  # one listing serves the check and the reads
    missing = store.missing(uids, listed=listed)
    if missing:
        raise RunFailed(
            f"{len(missing)} of {len(uids)} cohort rows have no result (for example {missing[0]}); "
            "the published tables were left as they were"
        )
    try:
        published = publish(
            output,
            iter_results(store, uids, listed=listed),
            files_of=lambda r: [r.series[c] for c in ("seg_uri", "sr_uri", "qc_uri") if r.series[c]],
        )
    except ResultMissing as exc:
        removed = store.discard_if_corrupt(exc.uid)
        advice = "it was removed: run again to redo that series" if removed else "run again"
        raise RunFailed(f"series {exc}; the published tables were left as they were ({advice})") from exc
    except OSError as exc:
        raise RunFailed(
            f"publishing the tables failed ({exc}); the published tables were left as they were, "
            "finished series are kept: run again to publish"
        ) from exc
    summary = RunSummary(
        n_cohort=len(rows),
        n_ok=published.n_ok,
        n_failed=len(rows) - published.n_ok,
        n_nodes=published.rows["nodes"],
        output=output,
    )
    logger.info(
        "done: %d ok, %d failed of %d series; %d nodes; tables in %s",
        summary.n_ok,
        summary.n_failed,
        summary.n_cohort,
        summary.n_nodes,
        output,
    )
    return summary


class RunFailed(Exception):
    """The job itself failed (exit code 1): nothing was published."""


@contextlib.contextmanager
def run_folder(base: str | None) -> Iterator[str]:
    """This run's own folder for per-series temporary files and progress markers, removed at
    the end; folders of earlier runs whose process is gone (killed) are removed first."""
    base = base or tempfile.gettempdir()
    try:
        _remove_dead_run_folders(base)
        folder = tempfile.mkdtemp(prefix=f"lnq-run-{os.getpid()}-", dir=base)
    except OSError as exc:
        raise UsageError(f"work dir {base} cannot be written: {exc.strerror or exc}") from exc
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_dead_run_folders(base: str) -> None:
    if not os.path.isdir(base):
        return
    for name in os.listdir(base):
        parts = name.split("-")
        if name.startswith("lnq-run-") and len(parts) >= 4 and parts[2].isdigit():
            pid = int(parts[2])
            if pid != os.getpid() and not lock.pid_alive(pid):
                logger.info("removing %s, left by a run that was killed", os.path.join(base, name))
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)

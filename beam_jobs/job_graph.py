"""The job graph: each pending cohort row processed and kept, then one last step publishes.

::

    Cohort (pending rows) -> Spread -> Process (dead letters: Recover) -> Merge -> CountSeries -> Publish

Every series' result is kept in the result store as it finishes (``beam_jobs/store.py``), so only a
small :class:`~beam_jobs.transforms.SeriesDone` flows on. ``CountSeries`` is a global combine: it
fires once, after the last series (and once with 0 when nothing was pending), so ``Publish`` runs
exactly once, after every series, on whichever runner runs the job (this process locally, a worker
on Dataflow). Publishing (``beam_jobs/publish.py``) checks that the run still holds the output's
lock, publishes the tables from the store, and releases the lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.utils.shared import Shared

from beam_jobs import lock
from beam_jobs.publish import PublishRequest, publish_run
from beam_jobs.run_facts import RunSummary
from beam_jobs.store import ResultStore
from beam_jobs.transforms import OutputFileSink, ProcessSeriesFn, SeriesDone, dead_letter_to_result
from pipeline.process import ProcessConfig

logger = logging.getLogger(__name__)


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


class PublishFn(beam.DoFn):
    """The job's last step: publish once every series is kept, then release the output's lock."""

    def __init__(self, request: PublishRequest, *, job_holds_lock: bool = False):
        self._request = request
        self._job_holds_lock = job_holds_lock

    def setup(self) -> None:
        if self._job_holds_lock:  # this worker may have processed no series
            lock.JobHeartbeat.start(self._request.output, self._request.token)

    def process(self, n_processed: int) -> Iterator[RunSummary]:
        request = self._request
        logger.info(
            "%d series processed in this job; publishing the tables of %d",
            n_processed,
            len(request.cohort_uids),
        )
        with lock.last_step(request.output, request.token):
            summary = publish_run(request, n_processed=n_processed)
        yield summary


def build(
    p: beam.Pipeline,
    pending: list[dict[str, Any]],
    *,
    config: ProcessConfig,
    store: ResultStore,
    request: PublishRequest,
    progress_dir: str | None,
    shared: Shared | None = None,
    job_holds_lock: bool = False,
) -> beam.PCollection:
    """Wire the job into ``p``: every pending series is processed and kept in ``store`` as it
    finishes, its SEG, SR and QC picture written to ``OUTPUT/seg/``, ``sr/`` and ``qc/``; then the
    tables of the whole cohort are published. ``job_holds_lock``: the job runs without its launcher,
    so its workers keep the lock alive. Returns what each series did (for tests)."""
    fn = ProcessSeriesFn(
        config,
        total=len(pending),
        progress_dir=progress_dir,
        sink=OutputFileSink(store.output),
        shared=shared,
        store=store,
        started=time.time(),
        lock_token=request.token if job_holds_lock else None,
    )
    done = (
        p
        | "Cohort" >> beam.Create(pending, reshuffle=False)
        | "ProcessCohort" >> ProcessCohort(fn, config=config, store=store)
    )
    _ = (
        done
        | "CountSeries" >> beam.combiners.Count.Globally()
        | "Publish" >> beam.ParDo(PublishFn(request, job_holds_lock=job_holds_lock))
    )
    return done

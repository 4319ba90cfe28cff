"""Small Beam transforms around the pure ``pipeline`` library."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from beam_jobs.lock import JobHeartbeat
from beam_jobs.store import FileRecord, KeptResult, ResultStore, copy_atomically
from pipeline.enums import SeriesStatus, Stage
from pipeline.errors import ModelError, SeriesError
from pipeline.locations import is_remote
from pipeline.model_host import ModelHost, open_model
from pipeline.models.spec import ModelSpec
from pipeline.outcome import SeriesIdentity, SeriesOutcome
from pipeline.outputs.layout import Artifact
from pipeline.outputs.rows import OutcomeRows, outcome_rows
from pipeline.process import ProcessConfig, process_series
from pipeline.uids import uid_problem

logger = logging.getLogger(__name__)


def localized_spec(spec: ModelSpec) -> ModelSpec:
    """The spec with a remote (gs://) model copied to this worker's disk once per process."""
    if "://" not in spec.path:
        return spec
    with _LOCALIZE_LOCK:
        local = _LOCALIZED.get(spec.path)
        if local is None:
            local = _LOCALIZED[spec.path] = _copy_model(spec)
    return dataclasses.replace(spec, path=local)


_LOCALIZED: dict[str, str] = {}
_LOCALIZE_LOCK = threading.Lock()


def _copy_model(spec: ModelSpec) -> str:
    """Copy the model's artifacts (files, or folders recursively) into one local folder."""
    target = tempfile.mkdtemp(prefix="lnq-model-")
    for artifact in spec.artifacts():
        local = os.path.join(target, os.path.basename(artifact))
        if FileSystems.exists(artifact):
            _copy_one(artifact, local)
            continue
        for meta in FileSystems.match([f"{artifact}/**"])[0].metadata_list:
            _copy_one(meta.path, os.path.join(local, meta.path[len(artifact) + 1 :]))
    return os.path.join(target, os.path.basename(spec.path.rstrip("/")))


def _copy_one(source: str, destination: str) -> None:
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    with FileSystems.open(source) as src, open(destination, "wb") as dst:
        while chunk := src.read(16 << 20):
            dst.write(chunk)


def check_model_reachable(spec: ModelSpec, shared: Shared) -> None:
    """Load a local model once on the launcher (fail fast); a remote model must at least exist.

    The local model is acquired through ``shared``, the handle the job's DoFns carry, so an
    in-process runner reuses it instead of loading it a second time."""
    if is_remote(spec.path):
        if not FileSystems.match([spec.path.rstrip("/") + "*"])[0].metadata_list:
            raise ModelError(f"model {spec.path} does not exist")
        return
    _LAUNCHER_MODELS[:] = [shared.acquire(lambda: open_model(spec))]  # the last run's only


_LAUNCHER_MODELS: list[ModelHost] = []  # keeps the launcher's model alive for the run


class OutputFileSink:
    """Writes a series' files under the output folder through Beam's filesystems, atomically:
    ``seg/<uid>.dcm``, ``sr/<uid>.dcm`` and ``qc/<uid>.png`` (:class:`~pipeline.outputs.layout.Artifact`).

    Returns each file's path relative to the output (the published tables render it in the form
    ``--output`` was given) and records its size and checksum in ``written``, so that a kept
    result knows its files and a resume can tell they are still there and still its own.
    """

    def __init__(self, output: str):
        self._output = output.rstrip("/")
        self.written: list[FileRecord] = []

    def for_series(self) -> OutputFileSink:
        """A sink of its own for one series (the DoFn's threads never share one)."""
        return OutputFileSink(self._output)

    def __call__(self, kind: str, series_uid: str, made: str) -> str:
        problem = uid_problem(series_uid)
        if problem:  # never let a bad UID become a path
            raise ValueError(f"refusing to name a file after {series_uid!r}: {problem}")
        relative = Artifact(kind).relative_path(series_uid)
        size, crc32c = copy_atomically(made, f"{self._output}/{relative}")
        self.written.append(FileRecord(path=relative, size=size, crc32c=crc32c))
        return relative


@dataclasses.dataclass(frozen=True)
class SeriesDone:
    """What flows through the pipeline for one series: which, how it ended, how many nodes, and
    its errors' (stage, type). Its rows are in the result store, not in the pipeline: a model that
    predicts noise can give a series 88,000 nodes (112 MB of rows), and two such elements passed
    between threads at once made Beam's in-process runner fail to decode its own stream ("Unknown
    type tag") in one run and grow to 23 GB until the kernel killed it in another."""

    series_uid: str
    status: str
    n_nodes: int
    errors: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, rows: OutcomeRows) -> SeriesDone:
        """The summary of one series' rows."""
        return cls(
            series_uid=str(rows.series["ct_series_instance_uid"]),
            status=str(rows.series["status"]),
            n_nodes=len(rows.nodes),
            errors=tuple((str(e["stage"]), str(e["error_type"])) for e in rows.errors),
        )


class ProcessSeriesFn(beam.DoFn):
    """Cohort row in, :class:`SeriesDone` out (the rows go to the result store); failures too.

    The model is loaded in ``setup()`` once per worker process, in its model host
    (``pipeline.model_host``: its own process, held to the series' limits), and shared by the
    worker's threads through Beam's ``Shared`` handle, never once per series. A model that cannot be
    loaded on a worker (a GPU asked for that torch cannot see) fails every series of that worker at
    ``inference``, naming the cause, rather than crashing the worker (Dataflow would retry it and fail
    the job with no rows). Where the job runs without its launcher, the worker keeps the output's
    lock alive (:class:`~beam_jobs.lock.JobHeartbeat`).
    """

    def __init__(
        self,
        config: ProcessConfig,
        *,
        total: int,
        progress_dir: str | None = None,
        sink: OutputFileSink | None = None,
        shared: Shared | None = None,
        store: ResultStore | None = None,
        started: float | None = None,
        lock_token: str | None = None,
    ):
        self._config = config
        self._store = store
        self._started = started
        self._total = total
        self._progress_dir = progress_dir
        self._sink = sink
        self._shared = shared or Shared()
        self._lock_token = lock_token
        self._model: ModelHost | None = None
        self._model_error: str | None = None
        self._ok = Metrics.counter("lnq", "series_ok")
        self._failed = Metrics.counter("lnq", "series_failed")

    def setup(self) -> None:
        if self._lock_token is not None and self._store is not None:
            JobHeartbeat.start(self._store.output, self._lock_token)
        spec = self._config.model
        if spec is not None:
            try:
                self._model = self._shared.acquire(lambda: open_model(localized_spec(spec)))
            except ModelError as exc:
                logger.error("model %s cannot be loaded on this worker: %s", spec.label, exc)
                self._model_error = str(exc)

    def process(self, raw: dict[str, Any]) -> Iterator[SeriesDone]:
        sink = self._sink.for_series() if self._sink is not None else None
        if self._model_error is not None:
            outcome = model_unavailable(raw, self._config, self._model_error)
        else:
            outcome = process_series(raw, config=self._config, model=self._model, sink=sink)
        rows = outcome_rows(outcome)
        if self._store is not None:  # kept now: a killed run keeps every finished series
            self._store.write(KeptResult(rows, tuple(sink.written) if sink is not None else ()))
        (self._ok if outcome.status == SeriesStatus.OK else self._failed).inc()
        report_progress(self._progress_dir, outcome, total=self._total, started=self._started)
        yield SeriesDone.of(rows)


def model_unavailable(raw: dict[str, Any], config: ProcessConfig, reason: str) -> SeriesOutcome:
    """The outcome of a series whose worker could not load the run's model: an ``inference`` error."""
    identity = SeriesIdentity.from_cohort(raw)
    uid = identity.ct_series_instance_uid
    error = SeriesError.from_exception(
        ModelError(reason, series_uid=uid), stage=Stage.INFERENCE, series_uid=uid
    )
    return SeriesOutcome.failed(
        identity, error, model=config.model_label, pipeline_version=config.pipeline_version
    )


def report_progress(
    progress_dir: str | None, outcome: SeriesOutcome, *, total: int, started: float | None = None
) -> None:
    """Log '[done/total] series UID: status in S s, ETA ...' across local workers by counting marker
    files (scripts watch for the '[done/total]' prefix)."""
    uid = outcome.series_uid
    if progress_dir is None:
        logger.info("series %s: %s", uid, outcome.status.value)
        return
    marker = hashlib.sha1(uid.encode()).hexdigest()
    with open(os.path.join(progress_dir, marker), "w", encoding="utf-8") as f:
        f.write(outcome.status.value)
    done = len(os.listdir(progress_dir))
    eta = ""
    if started is not None and done < total:
        eta = f", ETA {_duration((time.time() - started) / done * (total - done))}"
    logger.info(
        "[%d/%d] series %s: %s in %.1f s%s",
        done,
        total,
        uid,
        outcome.status.value,
        outcome.total_s or 0.0,
        eta,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def dead_letter_to_result(
    bad: tuple[dict[str, Any], tuple[Any, str, list[str]]],
    pipeline_version: str,
    model: str,
    store: ResultStore | None = None,
) -> OutcomeRows:
    """Turn a crash caught by ``with_exception_handling`` into the series' error rows."""
    raw, (exc_type, exc_repr, trace) = bad
    identity = SeriesIdentity.from_cohort(raw)
    uid = identity.ct_series_instance_uid
    logger.error("series %s crashed outside the stage handlers: %s", uid, "".join(trace[-3:]))
    error = dataclasses.replace(
        SeriesError.from_exception(RuntimeError(exc_repr), stage=Stage.UNEXPECTED, series_uid=uid),
        error_type=getattr(exc_type, "__name__", str(exc_type)),
    )
    rows = outcome_rows(SeriesOutcome.failed(identity, error, model=model, pipeline_version=pipeline_version))
    if store is not None:
        store.write(KeptResult(rows))
    return rows

"""The last step of ``lnq export-training``: the dataset's own files, once every case has a result.

:func:`finish_export` (in :class:`FinishFn`) is fed by every case through a global combine, so it
runs inside the Beam job, not after ``wait_until_finish()``: a Dataflow job finishes its dataset
itself, and releases the dataset's lock it was handed. It checks that
every cohort row has a result, removes files of cases that are not ``ok`` now (a ``--fresh`` export
that failed them, a smaller cohort, a case moved between training and test), and writes
``splits_final.json``, ``cases.parquet``/``cases.csv``, ``errors.parquet`` and ``dataset.json``, which
lists only ``ok`` cases. Files in the case folders that the export did not write are left.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_jobs import lock
from beam_jobs.export_cases import ExportConfig
from beam_jobs.publish import manifest
from beam_jobs.store import KeptResult, ResultStore, delete_quietly, write_atomically
from pipeline.enums import SeriesStatus
from pipeline.locations import is_remote
from pipeline.outputs.layout import OutputLayout
from pipeline.outputs.schemas import to_table
from pipeline.training.cases import PlannedCase, case_table, finished_case_row
from pipeline.training.dataset import CASE_FOLDERS, Split, dataset_json, image_file, label_file
from pipeline.training.provenance import SeriesSource, dataset_provenance
from pipeline.training.splits import fold_of, patient_folds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSummary:
    """What an export did, read back from the dataset it finished."""

    n_cohort: int
    n_ok: int
    n_failed: int
    n_training: int
    n_test: int
    dataset: str


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
    results = {uid: r.rows for uid, r in store.read(uids, listed=listed).items() if isinstance(r, KeptResult)}
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
    by_case = fold_of(folds)
    rows = [
        finished_case_row(
            results[p.ct_series_instance_uid].series,
            fold=by_case.get(p.case_id),
            source=sources.get(p.ct_series_instance_uid),
        )
        for p in plan
    ]
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


class FinishFn(beam.DoFn):
    """The export's last step: while the run still holds the dataset's lock, finish the dataset
    (:func:`finish_export`); when the job holds the lock (it runs without its launcher), release it."""

    def __init__(self, *, config: ExportConfig, lock_token: str, job_holds_lock: bool, **finish: Any):
        self._config = config
        self._lock_token = lock_token
        self._job_holds_lock = job_holds_lock
        self._finish = finish

    def setup(self) -> None:
        if self._job_holds_lock:  # this worker may have exported no case
            lock.JobHeartbeat.start(self._config.dataset, self._lock_token)

    def process(self, n_exported: int) -> Iterator[ExportSummary]:
        with lock.last_step(
            self._config.dataset,
            self._lock_token,
            release=self._job_holds_lock,
            unwritten="the dataset was not finished",
        ):
            summary = finish_export(n_exported, config=self._config, **self._finish)
        yield summary


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
    return OutputLayout(dataset).manifest


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

"""Publishing: the tables replaced atomically once every cohort row has exactly one kept result.

The job's last step (:mod:`beam_jobs.job_graph`) calls :func:`publish_run`, so publishing happens
wherever the job runs: in this process on the local runner, on a worker on Dataflow. Each table is
written row group by row group under a temporary name (memory bounded by :data:`ROW_GROUP_ROWS`,
whatever the cohort's size); then a journal (``_lnq/publish.json``) names the renames, the renames
happen and the journal goes. A run killed before the journal leaves the old tables; one killed
during the renames is completed by the next run (:func:`complete_publish`). Files of the previous
publish that this one no longer lists (``_lnq/manifest.json``) are deleted; nothing else is. Every
path read back from the journal or the manifest is checked to stay inside the output first
(:func:`check_bookkeeping`). The facts of the published run (counts, wall time, report) are kept
in ``_lnq/run.json`` (``beam_jobs/run_facts.py``) for the launcher's summary and ``lnq report``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_jobs.run_facts import RunSummary, write_run_facts
from beam_jobs.store import (
    CorruptResult,
    KeptResult,
    OutsideOutput,
    ResultStore,
    check_folders,
    confined,
    delete_quietly,
    exists,
    read_bytes,
    relative_to,
    synced_file,
    write_atomically,
)
from pipeline.enums import REFERENCE_MODEL, NodeSource, SeriesStatus
from pipeline.locations import is_remote
from pipeline.outputs.layout import TABLE_FILE, Artifact, OutputLayout
from pipeline.outputs.schemas import TABLES, sort_rows, to_table

logger = logging.getLogger(__name__)

PUBLISH_CHUNK_SERIES = 16
"""Results read at a time while publishing (in parallel, then written and dropped): 16 series of
a noisy model's 3,000 nodes are about 150 MB of rows."""
ROW_GROUP_ROWS = 32_768
"""Rows a table's writer buffers before writing them as one Parquet row group: what bounds the
memory of a publish, whatever the cohort's size or a noisy model's thousands of nodes per series."""
OUTPUT_FOLDERS = OutputLayout.own_folders(tuple(TABLES))
"""The output's own folders: none may be a symbolic link leading out of it."""


class RunFailed(Exception):
    """The job itself failed (exit code 1): nothing was published."""


class ResultMissing(Exception):
    """A cohort row's stored result is absent or unreadable: nothing may be published."""

    def __init__(self, uid: str, reason: str = "no result"):
        super().__init__(f"{uid}: {reason}")
        self.uid = uid


@dataclass(frozen=True)
class Published:
    """What a publish wrote: rows per table, series whose status is ``ok``, and nodes per source."""

    rows: dict[str, int]
    n_ok: int
    nodes_by_source: dict[str, int] = field(default_factory=dict)


def iter_results(
    store: ResultStore,
    uids: Iterable[str],
    *,
    chunk: int = PUBLISH_CHUNK_SERIES,
    listed: dict[SeriesStatus, set[str]] | None = None,
) -> Iterator[KeptResult]:
    """The result of each UID, in order, read ``chunk`` at a time; :class:`ResultMissing` for the
    first that has none (or an unusable one). ``listed``: a :meth:`ResultStore.listing` already
    made; else one is made here, once for all chunks (on Cloud Storage a listing is a round trip)."""
    pending = list(uids)
    listed = listed if listed is not None else store.listing()
    for first in range(0, len(pending), chunk):
        part = pending[first : first + chunk]
        found = store.read(part, listed=listed)
        for uid in part:
            result = found.get(uid)
            if result is None:
                raise ResultMissing(uid, "its stored result is missing or unreadable")
            if isinstance(result, CorruptResult):
                raise ResultMissing(uid, f"its stored result is missing or unreadable ({result})")
            if result.uid != uid:  # a file written by something else, or copied in by hand
                raise ResultMissing(uid, f"its stored result holds the series {result.uid!r}")
            yield result


class _TableWriter:
    """One table's rows, appended series by series and written a row group at a time."""

    def __init__(self, table: str, file: BinaryIO):
        self.table = table
        self.writer = pq.ParquetWriter(file, TABLES[table])
        self.buffer: list[dict[str, Any]] = []
        self.count = 0
        self.closed = False

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        self.buffer.extend(sort_rows(rows, self.table))  # series come in order: this is the table's order
        if len(self.buffer) >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.buffer or not self.count:  # an empty table still gets its schema
            self.writer.write_table(to_table(self.buffer, self.table))
            self.count += len(self.buffer)
            self.buffer = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.closed = True

    def abandon(self) -> None:
        """Close without finishing (the file is being discarded), before the file itself closes."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()


def _with_uris(series: dict[str, Any], output_as_given: str) -> dict[str, Any]:
    """The series row with its file columns (kept relative to the output) in the form ``--output``
    was given: ``results/seg/UID.dcm``, ``gs://b/run/seg/UID.dcm``."""
    row = dict(series)
    prefix = output_as_given.rstrip("/")
    for artifact in Artifact:
        if row.get(artifact.column):
            row[artifact.column] = f"{prefix}/{row[artifact.column]}"
    return row


def publish(output: str, results: Iterable[KeptResult], *, output_as_given: str | None = None) -> Published:
    """Replace the published tables with ``results`` (one per cohort row, in any order given by a
    list; an iterator must yield them in ``ct_series_instance_uid`` order, the tables' order) and
    the ``measurements`` flattened from their SRs, and record the files they point to in the
    manifest as the project's."""
    if isinstance(results, list):
        results = sorted(results, key=lambda r: r.uid)
    as_given = output_as_given or output
    token = uuid.uuid4().hex[:8]
    temporaries = {table: f"{table}/.{TABLE_FILE}.{token}.tmp" for table in TABLES}
    files: set[str] = set()
    n_ok = 0
    nodes_by_source: dict[str, int] = {s.value: 0 for s in NodeSource}
    try:
        with contextlib.ExitStack() as stack:
            writers: dict[str, _TableWriter] = {}
            for table, relative in temporaries.items():
                writers[table] = _TableWriter(table, stack.enter_context(synced_file(f"{output}/{relative}")))
                stack.callback(writers[table].abandon)  # a failure closes it before its file
            previous: str | None = None
            for result in results:
                uid = result.uid
                if previous is not None and uid <= previous:
                    raise ValueError(f"results out of order or repeated: {uid} after {previous}")
                previous = uid
                rows = result.rows
                series = _with_uris(rows.series, as_given)
                report = next(
                    (r.path for r in result.files if r.path.startswith(f"{Artifact.SR.folder}/")), None
                )
                if report is not None:  # the SR flattened: measurements, and its UID on the series row
                    series["sr_instance_uid"], measured = _measurement_rows(output, report)
                    writers["measurements"].add(measured)
                writers["series"].add([series])
                writers["nodes"].add(rows.nodes)
                writers["errors"].add(rows.errors)
                n_ok += rows.series["status"] == SeriesStatus.OK.value
                for node in rows.nodes:
                    nodes_by_source[node["source"]] = nodes_by_source.get(node["source"], 0) + 1
                files.update(record.path for record in result.files)
            for writer in writers.values():
                writer.close()
        renames = [[temporaries[t], OutputLayout.table_file(t)] for t in TABLES]
        write_atomically(_journal(output), json.dumps({"renames": renames}).encode())
    except BaseException:
        delete_quietly(f"{output}/{relative}" for relative in temporaries.values())
        raise
    complete_publish(output)
    listed = [OutputLayout.table_file(table) for table in TABLES] + sorted(files)
    try:
        _replace_manifest(output, listed)
    except OSError as exc:
        raise OSError(
            "the tables were replaced, but the manifest of the project's files could not be written "
            f"({exc}); run again to record it"
        ) from exc
    return Published(
        rows={t: w.count for t, w in writers.items()}, n_ok=n_ok, nodes_by_source=nodes_by_source
    )


def _measurement_rows(output: str, relative: str) -> tuple[str, list[dict[str, Any]]]:
    """One SR of the run: its SOP instance UID and its ``measurements`` rows (IDC's
    quantitative_measurements shape)."""
    import pydicom

    from pipeline.dicom.sr_rows import quantitative_measurement_rows

    data = read_bytes(confined(output, relative))
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        return str(dataset.SOPInstanceUID), quantitative_measurement_rows(dataset)
    except Exception as exc:  # a file that is not the SR this run wrote: the publish must not go on
        raise OSError(f"{relative} does not read as the run's SR ({type(exc).__name__}: {exc})") from exc


def _journal(output: str) -> str:
    return OutputLayout(output).journal


_TEMPORARY = re.compile(rf"({'|'.join(TABLES)})/\.{re.escape(TABLE_FILE)}\.[0-9a-f]{{8}}\.tmp")


def _journal_renames(output: str) -> list[tuple[str, str]] | None:
    """The renames of an interrupted publish, each checked: a table's temporary file onto that
    table's file, inside the output. OutsideOutput for anything else (a tampered journal)."""
    journal = _journal(output)
    if not exists(journal):
        return None
    try:
        renames = json.loads(read_bytes(journal))["renames"]
        pairs = [(str(a), str(b)) for a, b in renames]
    except (ValueError, KeyError, TypeError) as exc:
        raise OutsideOutput(f"output {output}: {journal} is not a journal of renames ({exc})") from exc
    for temporary, final in pairs:
        match = _TEMPORARY.fullmatch(temporary)
        if match is None or final != OutputLayout.table_file(match.group(1)):
            raise OutsideOutput(
                f"output {output}: {journal} names a rename this project never makes "
                f"({temporary!r} -> {final!r})"
            )
        confined(output, temporary)
        confined(output, final)
    return pairs


def complete_publish(output: str) -> bool:
    """Finish a publish that was interrupted between its renames; True when there was one."""
    renames = _journal_renames(output)
    if renames is None:
        return False
    for temporary, final in renames:
        source, target = f"{output}/{temporary}", f"{output}/{final}"
        if exists(source):
            FileSystems.rename([source], [target]) if is_remote(output) else os.replace(source, target)
    delete_quietly([_journal(output)])
    return True


def _manifest_path(output: str) -> str:
    return OutputLayout(output).manifest


def manifest(output: str) -> list[str]:
    """The files of the previous publish, relative to the output, each checked to stay inside it
    (OutsideOutput for a tampered entry: nothing may be deleted through it)."""
    path = _manifest_path(output)
    if not exists(path):
        return []
    try:
        files = json.loads(read_bytes(path))["files"]
        if not isinstance(files, list):
            raise TypeError("files is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise OutsideOutput(f"output {output}: {path} is not a manifest ({exc})") from exc
    for name in files:
        confined(output, name)
    return [str(name) for name in files]


def check_bookkeeping(output: str) -> None:
    """Before a run touches anything: the output's folders stay inside it, and so does every path
    its manifest and publish journal name. OutsideOutput (one line) otherwise."""
    check_folders(output, OUTPUT_FOLDERS)
    manifest(output)
    _journal_renames(output)


def add_to_manifest(output: str, paths: Iterable[str]) -> None:
    """Record files written after the publish (the report) as the project's."""
    files = sorted(set(manifest(output)) | {relative_to(output, path) for path in paths})
    write_atomically(_manifest_path(output), json.dumps({"files": files}, indent=1).encode())


def _replace_manifest(output: str, files: list[str]) -> None:
    previous = set(manifest(output))
    write_atomically(_manifest_path(output), json.dumps({"files": files}, indent=1).encode())
    gone = sorted(previous - set(files))
    if gone:
        logger.info("removing %d files of the previous publish that this run does not list", len(gone))
        delete_quietly(confined(output, name) for name in gone)


def read_table(output: str, table: str) -> pa.Table:
    """Read one published table back (local or gs://)."""
    matched = FileSystems.match([OutputLayout(output).table_files(table)])[0].metadata_list
    paths = sorted(m.path for m in matched)
    parts = []
    for path in paths:
        with FileSystems.open(path) as f:
            parts.append(pq.read_table(f, schema=TABLES[table]))
    return pa.concat_tables(parts) if parts else TABLES[table].empty_table()


# ---- the run, published --------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishRequest:
    """What the job's last step needs to publish: everything is plain data, so that it travels in
    the job graph to a Dataflow worker."""

    output: str
    output_as_given: str
    settings_key: str
    cohort_uids: tuple[str, ...]
    model: str
    pipeline_version: str
    started_at: str
    token: str
    report: bool = False


def publish_run(request: PublishRequest, *, n_processed: int = 0) -> RunSummary:
    """Check that every cohort row has exactly one result, publish the tables (streaming the
    results from the store: a cohort's rows are never all in memory at once), write the report
    when asked, and record the run's facts (``n_processed``: the series this job processed)."""
    output = request.output
    store = ResultStore(output, request.settings_key)
    uids = sorted(set(request.cohort_uids))
    check_bookkeeping(output)
    if complete_publish(output):
        logger.warning("completed the publish of an earlier run that was interrupted")
    listed = store.listing()  # one listing serves the check and the reads
    missing = store.missing(uids, listed=listed)
    if missing:
        raise RunFailed(
            f"{len(missing)} of {len(uids)} cohort rows have no result (for example {missing[0]}); "
            "the published tables were left as they were"
        )
    try:
        published = publish(
            output, iter_results(store, uids, listed=listed), output_as_given=request.output_as_given
        )
    except ResultMissing as exc:
        removed = store.discard_if_corrupt(exc.uid)
        advice = "it was removed: run again to redo that series" if removed else "run again"
        raise RunFailed(f"series {exc}; the published tables were left as they were ({advice})") from exc
    except OSError as exc:
        if "the tables were replaced" in str(exc):
            raise RunFailed(str(exc)) from exc
        raise RunFailed(
            f"publishing the tables failed ({exc}); the published tables were left as they were, "
            "finished series are kept: run again to publish"
        ) from exc
    finished = dt.datetime.now(dt.timezone.utc)
    started = dt.datetime.fromisoformat(request.started_at)
    summary = RunSummary(
        started_at=request.started_at,
        finished_at=finished.isoformat(timespec="seconds"),
        wall_s=round((finished - started).total_seconds(), 3),
        n_series=len(uids),
        n_processed=min(n_processed, len(uids)),
        n_ok=published.n_ok,
        model=request.model,
        output=request.output_as_given,
        n_reference_nodes=published.nodes_by_source.get(NodeSource.REFERENCE.value, 0),
        n_prediction_nodes=(
            None
            if request.model == REFERENCE_MODEL
            else published.nodes_by_source.get(NodeSource.PREDICTION.value, 0)
        ),
        settings_key=request.settings_key,
        pipeline_version=request.pipeline_version,
        token=request.token,
    )
    if request.report:
        from beam_jobs.report import write_report_for_output

        index = write_report_for_output(output, summary.report_info())
        add_to_manifest(output, report_files(output))
        summary = dataclasses.replace(summary, report=index)
    write_run_facts(output, summary)
    logger.info(
        "published: %d ok, %d failed of %d series; %s; tables in %s",
        summary.n_ok,
        summary.n_failed,
        summary.n_series,
        summary.nodes_text,
        request.output_as_given,
    )
    return summary


def report_files(output: str) -> list[str]:
    """Every file of the run report (they join the manifest of what the project wrote)."""
    return [m.path for m in FileSystems.match([f"{OutputLayout(output).report_folder}/**"])[0].metadata_list]

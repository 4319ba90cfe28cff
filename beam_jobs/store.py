"""Durable results: each series kept as it finishes, tables published atomically at the end.

Layout of an output folder (local or ``gs://``)::

    OUTPUT/series/ nodes/ errors/   the published tables (one Parquet file each)
    OUTPUT/seg/<uid>.dcm            DICOM written by the series (atomically, as they finish)
    OUTPUT/_lnq/results/<key>/ok/<uid>.json     one finished series: its rows for the three tables
    OUTPUT/_lnq/results/<key>/error/<uid>.json  a failed series (redone by the next run)
    OUTPUT/_lnq/manifest.json       every file outside _lnq/ that the project wrote
    OUTPUT/_lnq/publish.json        a publish in progress (rolled forward by the next run)
    OUTPUT/_lnq/lock.json           the run writing this output now (beam_jobs/lock.py)
    OUTPUT/_lnq/lock.guard          an empty flock file guarding lock.json (local outputs; kept)

``<key>`` is the run's settings fingerprint (:func:`run_key`): a rerun with the same model,
pipeline version and result-changing settings finds its finished series there and skips
them. Readers of the tables never see ``_lnq/``; the tables are replaced only by
:func:`publish`, after every cohort row has exactly one result, by renaming files that
were completely written first. Files the project did not write are never deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.enums import SeriesStatus
from pipeline.outputs.rows import OutcomeRows
from pipeline.outputs.schemas import TABLES, sort_rows, to_table
from pipeline.process import ProcessConfig
from pipeline.uids import uid_problem

logger = logging.getLogger(__name__)

WORK_AREA = "_lnq"
TABLE_FILE = "part-00000-of-00001.parquet"


def is_remote(path: str) -> bool:
    return "://" in path


def write_atomically(path: str, data: bytes) -> None:
    """Write ``path`` so that readers see the old file or the whole new one, never a part.

    Locally: a temporary name in the same folder, then a rename; on Cloud Storage an object
    only appears when its upload completes."""
    with _atomic_file(path) as f:
        f.write(data)


def copy_atomically(source: str, path: str) -> None:
    """Copy the local file ``source`` to ``path`` as :func:`write_atomically` writes, a block at a
    time (a noisy model's SEG can be hundreds of MB)."""
    with open(source, "rb") as f, _atomic_file(path) as out:
        shutil.copyfileobj(f, out, COPY_BLOCK_BYTES)


COPY_BLOCK_BYTES = 8 << 20


@contextlib.contextmanager
def _synced_file(path: str) -> Iterator[BinaryIO]:
    """A new file at ``path``; a local one is synced to disk before it counts (on Cloud Storage
    the object appears when its upload completes)."""
    if is_remote(path):
        with FileSystems.create(path) as f:
            yield f
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _atomic_file(path: str) -> Iterator[BinaryIO]:
    """A :func:`_synced_file` that replaces ``path`` only once whole: locally written under a
    temporary name in the same folder, then renamed (removed if the writing fails)."""
    if is_remote(path):
        with _synced_file(path) as f:
            yield f
        return
    temporary = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with _synced_file(temporary) as f:
            yield f
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as f:
        return f.read()


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def delete_quietly(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            FileSystems.delete([path])
        except Exception as exc:  # already gone, or not ours to worry about
            logger.debug("could not delete %s: %s", path, exc)


def run_key(config: ProcessConfig) -> tuple[str, dict[str, Any]]:
    """The fingerprint of what changes a series' results, and what went into it.

    It counts: the pipeline version; the model (kind, path, and for local models the
    size and modification time of each of its files, so a retrained model at the same
    path is not taken for the old one); nnU-Net folds, checkpoint, step size and
    test-time mirroring; the detection IoU threshold (with a model: the reference mode
    detects nothing). It does not count: the device (CPU and GPU give the same
    masks up to floating-point rounding), workers, limits, endpoints and the work dir."""
    settings: dict[str, Any] = {"pipeline_version": config.pipeline_version, "model": config.model_label}
    spec = config.model
    if spec is not None:
        settings.update(
            folds=list(map(str, spec.folds)),
            checkpoint=spec.checkpoint,
            step_size=spec.step_size,
            tta=spec.tta,
            files=_model_files(spec.artifacts()),
            iou_threshold=config.iou_threshold,
        )
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16], settings


def _model_files(artifacts: Iterable[str]) -> list[tuple[str, int, float]]:
    """(path, size, modification time) of every file of the model."""
    files: set[tuple[str, int, float]] = set()
    for artifact in artifacts:
        base = artifact.rstrip("/")
        if not is_remote(base):
            paths = (
                [base]
                if os.path.isfile(base)
                else [os.path.join(root, name) for root, _, names in os.walk(base) for name in names]
            )
            files.update((path, os.path.getsize(path), os.path.getmtime(path)) for path in paths)
            continue
        for pattern in (base, base + "/**"):
            for meta in FileSystems.match([pattern])[0].metadata_list:
                files.add((meta.path, meta.size_in_bytes, meta.last_updated_in_seconds))
    return sorted(files)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_rows(rows: OutcomeRows) -> bytes:
    return json.dumps(
        {"series": rows.series, "nodes": rows.nodes, "errors": rows.errors}, default=_json_default
    ).encode()


def decode_rows(data: bytes) -> OutcomeRows:
    raw = json.loads(data)
    series = raw["series"]
    series["processed_at"] = dt.datetime.fromisoformat(series["processed_at"])
    return OutcomeRows(series=series, nodes=raw["nodes"], errors=raw["errors"])


@dataclass(frozen=True)
class ResultStore:
    """Finished series of one run configuration, under ``OUTPUT/_lnq/results/<key>/``."""

    output: str
    key: str

    @property
    def root(self) -> str:
        return f"{self.output}/{WORK_AREA}/results/{self.key}"

    def path(self, status: SeriesStatus, uid: str) -> str:
        """Where the result of ``uid`` is kept; a value that is not a DICOM UID (a cohort row
        refused at the cohort stage) never becomes a path: it is named by its hash."""
        name = uid if uid_problem(uid) is None else "invalid-" + hashlib.sha256(uid.encode()).hexdigest()[:32]
        return f"{self.root}/{status.value}/{name}.json"

    def write(self, rows: OutcomeRows) -> None:
        """Keep one finished series (atomically); an ``ok`` result replaces an earlier failure."""
        uid = str(rows.series["ct_series_instance_uid"])
        status = SeriesStatus(rows.series["status"])
        write_atomically(self.path(status, uid), encode_rows(rows))
        if status == SeriesStatus.OK:
            stale = self.path(SeriesStatus.ERROR, uid)
            if exists(stale):
                delete_quietly([stale])

    def _listed(self, status: SeriesStatus) -> set[str]:
        """File names of the results with ``status``: one listing, no reads."""
        pattern = f"{self.root}/{status.value}/*.json"
        return {os.path.basename(m.path) for m in FileSystems.match([pattern])[0].metadata_list}

    def done(self) -> set[str]:
        """UIDs with an ``ok`` result: one listing, no reads."""
        return {name[: -len(".json")] for name in self._listed(SeriesStatus.OK)}

    def missing(
        self, uids: Iterable[str], *, listed: dict[SeriesStatus, set[str]] | None = None
    ) -> list[str]:
        """UIDs with no stored result, ``ok`` or ``error``: no reads; ``listed``: a :meth:`listing`
        already made (else two listings)."""
        names = set().union(*(listed if listed is not None else self.listing()).values())
        return [uid for uid in uids if os.path.basename(self.path(SeriesStatus.OK, uid)) not in names]

    def discard_if_corrupt(self, uid: str) -> list[str]:
        """Remove the kept results of ``uid`` that read but do not decode to its rows, so that the
        next run redoes the series instead of failing on them again; a file that cannot be read
        at all (a network error) is left. Returns the paths removed."""
        removed = []
        for status in (SeriesStatus.OK, SeriesStatus.ERROR):
            path = self.path(status, uid)
            try:
                data = read_bytes(path)
            except OSError:
                continue
            try:
                ok = str(decode_rows(data).series["ct_series_instance_uid"]) == uid
            except (ValueError, KeyError, TypeError, AttributeError):
                ok = False
            if not ok:
                delete_quietly([path])
                removed.append(path)
        return removed

    def listing(self) -> dict[SeriesStatus, set[str]]:
        """The file names of the kept results, by status: two listings, no reads."""
        return {status: self._listed(status) for status in (SeriesStatus.OK, SeriesStatus.ERROR)}

    def read(
        self,
        uids: Iterable[str],
        *,
        threads: int = 16,
        listed: dict[SeriesStatus, set[str]] | None = None,
    ) -> dict[str, OutcomeRows]:
        """The stored result of each UID that has one (``ok`` preferred); only listed files are read,
        and an unreadable one counts as no result (the run's check then refuses to publish).
        ``listed``: a :meth:`listing` already made (a caller reading in chunks lists once)."""
        listed = listed if listed is not None else self.listing()

        def one(uid: str) -> tuple[str, OutcomeRows | None]:
            for status, names in listed.items():
                path = self.path(status, uid)
                if os.path.basename(path) not in names:
                    continue
                try:
                    return uid, decode_rows(read_bytes(path))
                except (OSError, ValueError, KeyError) as exc:
                    logger.warning("the stored result %s is unreadable (%s); it counts as missing", path, exc)
            return uid, None

        with ThreadPoolExecutor(max(1, threads)) as pool:
            return {uid: rows for uid, rows in pool.map(one, list(uids)) if rows is not None}


PUBLISH_CHUNK_SERIES = 16
"""Results read at a time while publishing (in parallel, then written and dropped): 16 series of
a noisy model's 3,000 nodes are about 150 MB of rows."""
ROW_GROUP_ROWS = 32_768
"""Rows a table's writer buffers before writing them as one Parquet row group: what bounds the
memory of a publish, whatever the cohort's size or a noisy model's thousands of nodes per series."""


class ResultMissing(Exception):
    """A cohort row's stored result is absent or unreadable: nothing may be published."""

    def __init__(self, uid: str, reason: str = "no result"):
        super().__init__(f"{uid}: {reason}")
        self.uid = uid


@dataclass(frozen=True)
class Published:
    """What a publish wrote: rows per table, and series whose status is ``ok``."""

    rows: dict[str, int]
    n_ok: int


def iter_results(
    store: ResultStore,
    uids: Iterable[str],
    *,
    chunk: int = PUBLISH_CHUNK_SERIES,
    listed: dict[SeriesStatus, set[str]] | None = None,
) -> Iterator[OutcomeRows]:
    """The result of each UID, in order, read ``chunk`` at a time; :class:`ResultMissing` for the
    first that has none (or an unreadable one). ``listed``: a :meth:`ResultStore.listing` already
    made; else one is made here, once for all chunks (on Cloud Storage a listing is a round trip)."""
    pending = list(uids)
    listed = listed if listed is not None else store.listing()
    for first in range(0, len(pending), chunk):
        part = pending[first : first + chunk]
        found = store.read(part, listed=listed)
        for uid in part:
            if uid not in found:
                raise ResultMissing(uid, "its stored result is missing or unreadable")
            held = str(found[uid].series.get("ct_series_instance_uid"))
            if held != uid:  # a file written by something else, or copied in by hand
                raise ResultMissing(uid, f"its stored result holds the series {held!r}")
            yield found[uid]


_table_file = _synced_file
"""Where a publish opens each table's temporary file (its own name, so that a test can fail
the tables' writing alone)."""


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


def publish(
    output: str,
    results: Iterable[OutcomeRows],
    *,
    files_of: Callable[[OutcomeRows], Iterable[str]] = lambda _: (),
) -> Published:
    """Replace the published tables with ``results`` (one per cohort row, in any order given by a
    list; an iterator must yield them in ``ct_series_instance_uid`` order, the tables' order).

    Results are streamed: each table is written row group by row group under a temporary name,
    so memory stays bounded by :data:`ROW_GROUP_ROWS`. Then a journal names the renames, the
    renames happen, and the journal goes. A run killed (or failing, say on a missing result)
    before the journal leaves the old tables; one killed during the renames is completed by the
    next run (:func:`complete_publish`). Files of the previous publish that this one no longer
    lists (in the manifest) are deleted; nothing else is. ``files_of``: the files a result wrote
    (recorded in the manifest as the project's)."""
    if isinstance(results, list):
        results = sorted(results, key=lambda r: str(r.series["ct_series_instance_uid"]))
    token = uuid.uuid4().hex[:8]
    temporaries = {table: f"{output}/{table}/.{TABLE_FILE}.{token}.tmp" for table in TABLES}
    files: list[str] = []
    n_ok = 0
    try:
        with contextlib.ExitStack() as stack:
            writers: dict[str, _TableWriter] = {}
            for table, path in temporaries.items():
                writers[table] = _TableWriter(table, stack.enter_context(_table_file(path)))
                stack.callback(writers[table].abandon)  # a failure closes it before its file
            previous: str | None = None
            for result in results:
                uid = str(result.series["ct_series_instance_uid"])
                if previous is not None and uid <= previous:
                    raise ValueError(f"results out of order or repeated: {uid} after {previous}")
                previous = uid
                writers["series"].add([result.series])
                writers["nodes"].add(result.nodes)
                writers["errors"].add(result.errors)
                n_ok += result.series["status"] == SeriesStatus.OK.value
                files.extend(files_of(result))
            for writer in writers.values():
                writer.close()
        write_atomically(
            _journal(output),
            json.dumps(
                {"renames": [[temporaries[t], f"{output}/{t}/{TABLE_FILE}"] for t in TABLES]}
            ).encode(),
        )
    except BaseException:
        delete_quietly(temporaries.values())
        raise
    complete_publish(output)
    listed = [f"{table}/{TABLE_FILE}" for table in TABLES] + sorted(
        {_relative(output, p) for p in files if p}
    )
    _replace_manifest(output, listed)
    return Published(rows={t: w.count for t, w in writers.items()}, n_ok=n_ok)


def _journal(output: str) -> str:
    return f"{output}/{WORK_AREA}/publish.json"


def complete_publish(output: str) -> bool:
    """Finish a publish that was interrupted between its renames; True when there was one."""
    journal = _journal(output)
    if not exists(journal):
        return False
    renames = json.loads(read_bytes(journal))["renames"]
    for temporary, final in renames:
        if exists(temporary):
            FileSystems.rename([temporary], [final]) if is_remote(output) else os.replace(temporary, final)
    delete_quietly([journal])
    return True


def _relative(output: str, path: str) -> str:
    path = path if is_remote(path) else os.path.abspath(path)
    prefix = output.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def manifest(output: str) -> list[str]:
    path = f"{output}/{WORK_AREA}/manifest.json"
    return list(json.loads(read_bytes(path))["files"]) if exists(path) else []


def add_to_manifest(output: str, paths: Iterable[str]) -> None:
    """Record files written after the publish (the report) as the project's."""
    files = sorted(set(manifest(output)) | {_relative(output, path) for path in paths})
    write_atomically(f"{output}/{WORK_AREA}/manifest.json", json.dumps({"files": files}, indent=1).encode())


def _replace_manifest(output: str, files: list[str]) -> None:
    previous = set(manifest(output))
    write_atomically(f"{output}/{WORK_AREA}/manifest.json", json.dumps({"files": files}, indent=1).encode())
    gone = sorted(previous - set(files))
    if gone:
        logger.info("removing %d files of the previous publish that this run does not list", len(gone))
        delete_quietly(f"{output}/{name}" for name in gone)

"""Durable results: each series kept as it finishes, with the files it wrote, under ``_lnq/``.

Layout of an output folder (local or ``gs://``)::

    OUTPUT/series/ nodes/ errors/   the published tables (one Parquet file each; beam_jobs/publish.py)
    OUTPUT/seg/<uid>.dcm            DICOM written by the series (atomically, as they finish)
    OUTPUT/_lnq/results/<key>/ok/<uid>.json     one finished series: its rows and its files
    OUTPUT/_lnq/results/<key>/error/<uid>.json  a failed series (redone by the next run)
    OUTPUT/_lnq/manifest.json       every file outside _lnq/ that the project wrote
    OUTPUT/_lnq/publish.json        a publish in progress (rolled forward by the next run)
    OUTPUT/_lnq/run.json            the facts of the last published run (beam_jobs/publish.py)
    OUTPUT/_lnq/lock.json           the run writing this output now (beam_jobs/lock.py)
    OUTPUT/_lnq/lock.guard          an empty flock file guarding lock.json (local outputs; kept)

``<key>`` is the run's settings fingerprint (:func:`run_key`): a rerun with the same code, model
and result-changing settings finds its finished series there and reuses each one whose files are
still in this output and still its own (:meth:`ResultStore.reusable`). Paths in kept results and
in the manifest are relative to the output, so a moved output or a relative ``--output`` given
from elsewhere resumes; every path read back from ``_lnq/`` is checked to stay inside the output
(:func:`confined`) before anything is written, renamed or deleted through it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import google_crc32c
from apache_beam.io.filesystems import FileSystems

from pipeline.enums import SeriesStatus
from pipeline.locations import is_remote
from pipeline.outputs.layout import OutputLayout
from pipeline.outputs.rows import OutcomeRows
from pipeline.outputs.schemas import SERIES_TABLES, to_table
from pipeline.uids import uid_problem

logger = logging.getLogger(__name__)

COPY_BLOCK_BYTES = 8 << 20


class OutsideOutput(Exception):
    """A path read back from the output's bookkeeping, or one of its folders, leads outside it."""


def confined(output: str, relative: str) -> str:
    """``OUTPUT/relative`` after checking that ``relative`` (read from ``_lnq/``: untrusted) names a
    path inside the output: relative, no ``..`` or empty part, no backslash or NUL, and locally no
    symbolic link on the way that leads out. OutsideOutput otherwise."""
    if (
        not isinstance(relative, str)
        or not relative
        or relative.startswith("/")
        or "\\" in relative
        or "\0" in relative
        or is_remote(relative)
        or any(part in ("", ".", "..") for part in relative.split("/"))
    ):
        raise OutsideOutput(f"output {output}: {relative!r} is not a path inside the output")
    path = f"{output.rstrip('/')}/{relative}"
    if not is_remote(output):
        root = os.path.realpath(output)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise OutsideOutput(f"output {output}: {relative} leads outside the output (a symbolic link)")
    return path


def check_folders(output: str, folders: Iterable[str]) -> None:
    """Refuse an output whose own folders (``seg/``, ``series/``, ``_lnq/``...) are symbolic links
    leading out of it: the run would write through them. Local outputs only (Cloud Storage has no
    links)."""
    for folder in folders:
        confined(output, folder)


def relative_to(output: str, path: str) -> str:
    """``path`` (a file this run wrote under ``output``) relative to the output."""
    prefix = output.rstrip("/") + "/"
    full = path if is_remote(path) else os.path.abspath(path)
    if not full.startswith(prefix):
        raise OutsideOutput(f"{path} is not inside the output {output}")
    return full[len(prefix) :]


@dataclass(frozen=True)
class FileRecord:
    """A file a series wrote, relative to the output, with what identifies its content: size and
    CRC32C (Cloud Storage's own checksum, base64, so a gs:// file is checked without reading it)."""

    path: str
    size: int
    crc32c: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "crc32c": self.crc32c}

    @classmethod
    def from_json(cls, raw: Any) -> FileRecord:
        if not isinstance(raw, dict):
            raise TypeError("a file record is not an object")
        return cls(path=str(raw["path"]), size=int(raw["size"]), crc32c=str(raw["crc32c"]))


def _crc32c_text(checksum: google_crc32c.Checksum) -> str:
    return base64.b64encode(checksum.digest()).decode()


def write_atomically(path: str, data: bytes) -> None:
    """Write ``path`` so that readers see the old file or the whole new one, never a part.

    Locally: a temporary name in the same folder, then a rename; on Cloud Storage an object
    only appears when its upload completes."""
    with _atomic_file(path) as f:
        f.write(data)


def copy_atomically(source: str, path: str) -> tuple[int, str]:
    """Copy the local file ``source`` to ``path`` as :func:`write_atomically` writes, a block at a
    time (a noisy model's SEG can be hundreds of MB). Returns its size and CRC32C."""
    checksum = google_crc32c.Checksum()
    size = 0
    with open(source, "rb") as f, _atomic_file(path) as out:
        while block := f.read(COPY_BLOCK_BYTES):
            checksum.update(block)
            size += len(block)
            out.write(block)
    return size, _crc32c_text(checksum)


def file_identity(path: str) -> tuple[int, str] | None:
    """Size and CRC32C of ``path`` as it is now; None when it does not exist. A local file is read;
    a gs:// object's checksum comes from its metadata."""
    if is_remote(path):
        try:
            matched = FileSystems.match([path])[0].metadata_list
            if not matched:
                return None
            return int(matched[0].size_in_bytes), str(FileSystems.checksum(path))
        except Exception as exc:  # gone between the two calls, or unreadable: not verifiable
            logger.debug("cannot check %s: %s", path, exc)
            return None
    checksum = google_crc32c.Checksum()
    size = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(COPY_BLOCK_BYTES):
                checksum.update(block)
                size += len(block)
    except OSError:
        return None
    return size, _crc32c_text(checksum)


@contextlib.contextmanager
def synced_file(path: str) -> Iterator[BinaryIO]:
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
    """A :func:`synced_file` that replaces ``path`` only once whole: locally written under a
    temporary name in the same folder, then renamed (removed if the writing fails)."""
    if is_remote(path):
        with synced_file(path) as f:
            yield f
        return
    temporary = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with synced_file(temporary) as f:
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


@dataclass(frozen=True)
class KeptResult:
    """One finished series as the store keeps it: its rows (file columns relative to the output)
    and the files it wrote."""

    rows: OutcomeRows
    files: tuple[FileRecord, ...] = field(default=())

    @property
    def uid(self) -> str:
        return str(self.rows.series["ct_series_instance_uid"])


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_result(result: KeptResult) -> bytes:
    rows = result.rows
    return json.dumps(
        {
            "series": rows.series,
            "nodes": rows.nodes,
            "errors": rows.errors,
            "files": [f.to_json() for f in result.files],
        },
        default=_json_default,
    ).encode()


class CorruptResult(ValueError):
    """A kept result that does not decode, or no longer fits the tables' schemas."""


def fits_series_tables(rows: OutcomeRows) -> None:
    """Raise unless ``rows`` fit the ``series``, ``nodes`` and ``errors`` schemas."""
    for table in SERIES_TABLES:
        to_table(getattr(rows, table) if table != "series" else [rows.series], table)


def decode_result(data: bytes, check: Callable[[OutcomeRows], None] = fits_series_tables) -> KeptResult:
    """A kept result, checked by ``check`` against the tables it will be published in (a result kept
    by an older version whose columns differ is corrupt: the series is redone rather than crashing
    every publish)."""
    try:
        raw = json.loads(data)
        series = dict(raw["series"])
        if "processed_at" in series:
            series["processed_at"] = dt.datetime.fromisoformat(series["processed_at"])
        rows = OutcomeRows(series=series, nodes=list(raw["nodes"]), errors=list(raw["errors"]))
        check(rows)
        files = tuple(FileRecord.from_json(f) for f in raw.get("files", []))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptResult(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # pyarrow's conversion errors (ArrowInvalid is a ValueError, others not)
        raise CorruptResult(f"{type(exc).__name__}: {exc}") from exc
    return KeptResult(rows=rows, files=files)


@dataclass(frozen=True)
class ResultStore:
    """Finished series of one run configuration, under ``OUTPUT/_lnq/results/<key>/``. ``check``
    says what a kept result must fit (by default the ``series``, ``nodes`` and ``errors`` tables; the
    training export keeps case rows)."""

    output: str
    key: str
    check: Callable[[OutcomeRows], None] = fits_series_tables

    @property
    def root(self) -> str:
        return OutputLayout(self.output).results(self.key)

    def path(self, status: SeriesStatus, uid: str) -> str:
        """Where the result of ``uid`` is kept; a value that is not a DICOM UID (a cohort row
        refused at the cohort stage) never becomes a path: it is named by its hash."""
        name = uid if uid_problem(uid) is None else "invalid-" + hashlib.sha256(uid.encode()).hexdigest()[:32]
        return f"{self.root}/{status.value}/{name}.json"

    def write(self, result: KeptResult) -> None:
        """Keep one finished series (atomically); an ``ok`` result replaces an earlier failure."""
        status = SeriesStatus(result.rows.series["status"])
        write_atomically(self.path(status, result.uid), encode_result(result))
        if status == SeriesStatus.OK:
            stale = self.path(SeriesStatus.ERROR, result.uid)
            if exists(stale):
                delete_quietly([stale])

    def _listed(self, status: SeriesStatus) -> set[str]:
        """File names of the results with ``status``: one listing, no reads."""
        pattern = f"{self.root}/{status.value}/*.json"
        return {os.path.basename(m.path) for m in FileSystems.match([pattern])[0].metadata_list}

    def done(self) -> set[str]:
        """UIDs with an ``ok`` result: one listing, no reads (see :meth:`reusable`)."""
        return {name[: -len(".json")] for name in self._listed(SeriesStatus.OK)}

    def reusable(self, uids: Iterable[str], *, threads: int = 16) -> tuple[set[str], dict[str, str]]:
        """Of ``uids``, those whose ``ok`` result can be published again as it is: it decodes, and
        every file it wrote is in this output with the size and checksum it was written with (a
        ``--limit`` publish may have removed it, another setting's run replaced it). Returns them,
        and for the others that have an ``ok`` result, why it is not reused."""
        listed = self._listed(SeriesStatus.OK)
        candidates = [uid for uid in uids if os.path.basename(self.path(SeriesStatus.OK, uid)) in listed]

        def check(uid: str) -> tuple[str, str | None]:
            try:
                result = decode_result(read_bytes(self.path(SeriesStatus.OK, uid)), self.check)
            except (OSError, CorruptResult) as exc:
                return uid, f"its kept result is unreadable ({exc})"
            if result.uid != uid:
                return uid, f"its kept result holds the series {result.uid!r}"
            for record in result.files:
                try:
                    path = confined(self.output, record.path)
                except OutsideOutput as exc:
                    return uid, str(exc)
                found = file_identity(path)
                if found is None:
                    return uid, f"{record.path} is missing"
                if found != (record.size, record.crc32c):
                    return uid, f"{record.path} is not the file this result wrote"
            return uid, None

        with ThreadPoolExecutor(max(1, threads)) as pool:
            checked = list(pool.map(check, candidates))
        return {uid for uid, why in checked if why is None}, {uid: why for uid, why in checked if why}

    def missing(
        self, uids: Iterable[str], *, listed: dict[SeriesStatus, set[str]] | None = None
    ) -> list[str]:
        """UIDs with no stored result, ``ok`` or ``error``: no reads; ``listed``: a :meth:`listing`
        already made (else two listings)."""
        names = set().union(*(listed if listed is not None else self.listing()).values())
        return [uid for uid in uids if os.path.basename(self.path(SeriesStatus.OK, uid)) not in names]

    def discard_if_corrupt(self, uid: str) -> list[str]:
        """Remove the kept results of ``uid`` that read but do not decode to its rows (cut short,
        another series', or no longer fitting the schemas), so that the next run redoes the series
        instead of failing on them again; a file that cannot be read at all (a network error) is
        left. Returns the paths removed."""
        removed = []
        for status in (SeriesStatus.OK, SeriesStatus.ERROR):
            path = self.path(status, uid)
            try:
                data = read_bytes(path)
            except OSError:
                continue
            try:
                ok = decode_result(data, self.check).uid == uid
            except CorruptResult:
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
    ) -> dict[str, KeptResult | CorruptResult]:
        """The stored result of each UID that has one (``ok`` preferred); only listed files are read.
        A result that cannot be read or decoded is given as its :class:`CorruptResult` (the publish
        then refuses, and removes it). ``listed``: a :meth:`listing` already made."""
        listed = listed if listed is not None else self.listing()

        def one(uid: str) -> tuple[str, KeptResult | CorruptResult | None]:
            problem: CorruptResult | None = None
            for status, names in listed.items():
                path = self.path(status, uid)
                if os.path.basename(path) not in names:
                    continue
                try:
                    return uid, decode_result(read_bytes(path), self.check)
                except OSError as exc:
                    problem = CorruptResult(f"unreadable: {exc}")
                except CorruptResult as exc:
                    problem = exc
                logger.warning("the stored result %s cannot be used (%s)", path, problem)
            return uid, problem

        with ThreadPoolExecutor(max(1, threads)) as pool:
            return {uid: found for uid, found in pool.map(one, list(uids)) if found is not None}

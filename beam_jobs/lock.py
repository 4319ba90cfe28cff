"""One writer per output folder: a lock file ``OUTPUT/_lnq/lock.json``, local or on Cloud Storage.

Two runs writing one output folder silently mixed their rows (issue 10), so a run takes this lock
before it touches the output and a second run is refused with a message naming the holder. The lock
holds JSON ``{host, pid, started_at, heartbeat_at, command, pid_started, token}``: ``pid_started``
(the process start time from /proc) tells a reused PID from the holder, ``token`` tells our lock
from a later one. A lock is stale when its holder ran on this host and is gone, or when its heartbeat
(refreshed about every minute) is older than ``stale_after_s``; a stale lock is taken over with one
WARNING line. Every change is conditional so that of two runs racing, exactly one wins: locally
``O_CREAT | O_EXCL`` plus a ``flock``-guarded check-and-replace, on gs:// a generation precondition.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

logger = logging.getLogger(__name__)

LOCK_NAME = "_lnq/lock.json"
_ATTEMPTS = 20


class OutputLocked(Exception):
    """Another run holds (or may hold) the output folder; the message is one line for the user."""


@dataclass(frozen=True)
class LockRecord:
    """What a lock file says about the run holding it."""

    host: str
    pid: int
    started_at: str
    heartbeat_at: str
    command: str
    pid_started: int | None
    token: str

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes) -> LockRecord:
        """Raise ValueError when ``raw`` is not a lock record (half written, or foreign)."""
        try:
            data = json.loads(raw)
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                started_at=str(data["started_at"]),
                heartbeat_at=str(data["heartbeat_at"]),
                command=str(data.get("command", "")),
                pid_started=None if data.get("pid_started") is None else int(data["pid_started"]),
                token=str(data.get("token", "")),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a lock record: {raw[:80]!r}") from exc


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def process_started(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (/proc/PID/stat field 22); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_gone(record: LockRecord) -> bool:
    """Whether a lock taken on this host belongs to a process that no longer runs."""
    if not pid_alive(record.pid):
        return True
    if record.pid_started is None:
        return False
    started = process_started(record.pid)
    return started is not None and started != record.pid_started


def stale_reason(record: LockRecord, *, stale_after_s: float, now: float) -> str | None:
    """Why ``record`` no longer protects a run, or None while its holder may still be writing."""
    if record.host == socket.gethostname() and holder_gone(record):
        return "no longer running"
    try:
        silent_s = now - _seconds(record.heartbeat_at)
    except ValueError:
        return None
    if silent_s > stale_after_s:
        return f"no heartbeat for {silent_s:.0f} s"
    return None


def _locked_message(output: str, holder: LockRecord) -> str:
    return (
        f"output {output} is being written by another lnq run (host {holder.host}, PID {holder.pid}, "
        f"since {holder.started_at}); wait for it to finish or stop it"
    )


class _Store(Protocol):
    """The lock file's storage: every change is conditional on a version read before."""

    where: str

    def create(self, data: bytes) -> Any | None:
        """Write ``data`` if no lock exists; its version, or None when one exists."""

    def read(self) -> tuple[bytes, Any] | None:
        """The lock's bytes and version, or None when there is no lock."""

    def take_over(self, data: bytes, version: Any) -> Any | None:
        """Replace the lock at ``version`` by ``data``; the new version, or None if it changed."""

    def refresh(self, data: bytes, version: Any) -> Any | None:
        """Like ``take_over``, for our own lock (a heartbeat)."""

    def delete(self, version: Any) -> bool:
        """Delete the lock if still at ``version``; whether it was."""


class _LocalStore:
    """A lock file on a local (or mounted) file system; the version is the file's bytes.

    ``O_EXCL`` makes creation atomic; the read-compare-replace steps run under ``flock`` on a
    sidecar file that is never deleted, so the kernel frees it when a holder dies.
    """

    def __init__(self, output: Path) -> None:
        self.path = output / LOCK_NAME
        self.where = str(self.path)
        self._guard_path = self.path.with_name("lock.guard")

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._guard_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            with contextlib.suppress(OSError):  # a file system without flock: O_EXCL still holds
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _create(self, data: bytes) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return data

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def create(self, data: bytes) -> bytes | None:
        with self._guarded():
            return self._create(data)

    def read(self) -> tuple[bytes, bytes] | None:
        with self._guarded():
            raw = self._read()
        return None if raw is None else (raw, raw)

    def take_over(self, data: bytes, version: bytes) -> bytes | None:
        with self._guarded():
            aside = self.path.with_name(f"lock.json.stale-{uuid.uuid4().hex}")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return None
            if aside.read_bytes() != version:  # not the lock we judged stale: put it back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
                aside.unlink()
                return None
            aside.unlink()
            return self._create(data)

    def refresh(self, data: bytes, version: bytes) -> bytes | None:
        with self._guarded():
            if self._read() != version:
                return None
            temp = self.path.with_name(f"lock.json.tmp-{uuid.uuid4().hex}")
            temp.write_bytes(data)
            os.replace(temp, self.path)
            return data

    def delete(self, version: bytes) -> bool:
        with self._guarded():
            if self._read() != version:
                return False
            self.path.unlink()
            return True


def _storage_client() -> Any:
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="test", credentials=AnonymousCredentials())
    return storage.Client()


class _GcsStore:
    """The lock as a Cloud Storage object; the version is its generation (``0``: must not exist)."""

    def __init__(self, output: str) -> None:
        bucket, _, prefix = output[len("gs://") :].partition("/")
        name = f"{prefix.strip('/')}/{LOCK_NAME}" if prefix.strip("/") else LOCK_NAME
        self.where = f"gs://{bucket}/{name}"
        self._bucket = _storage_client().bucket(bucket)
        self._name = name

    def _upload(self, data: bytes, generation: int) -> int | None:
        from google.api_core.exceptions import PreconditionFailed

        blob = self._bucket.blob(self._name)
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=generation)
        except PreconditionFailed:
            return None
        return int(blob.generation)

    def create(self, data: bytes) -> int | None:
        return self._upload(data, 0)

    def read(self) -> tuple[bytes, int] | None:
        from google.api_core.exceptions import NotFound

        blob = self._bucket.get_blob(self._name)
        if blob is None:
            return None
        generation = int(blob.generation)  # read first: a download may reset it from its headers
        try:
            # Bytes of a later generation would only make a takeover at ``generation`` fail: safe.
            return blob.download_as_bytes(), generation
        except NotFound:
            return None

    def take_over(self, data: bytes, version: int) -> int | None:
        return self._upload(data, version)

    def refresh(self, data: bytes, version: int) -> int | None:
        return self._upload(data, version)

    def delete(self, version: int) -> bool:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            self._bucket.blob(self._name).delete(if_generation_match=version)
        except (NotFound, PreconditionFailed):
            return False
        return True


def _store(output: str) -> _Store:
    if output.startswith("gs://"):
        return _GcsStore(output)
    if "://" in output:
        raise ValueError(f"output {output}: only local folders and gs:// can be locked")
    return _LocalStore(Path(output))


class OutputLock:
    """A held lock: refreshed by a heartbeat thread until ``release()`` (or the end of a with block)."""

    def __init__(
        self, output: str, store: _Store, record: LockRecord, version: Any, *, heartbeat_s: float
    ) -> None:
        self.output = output
        self.record = record
        self._store = store
        self._version = version
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._released = False
        self.lost = False
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), name="lnq-lock", daemon=True)
        self._thread.start()

    def _beat(self, heartbeat_s: float) -> None:
        while not self._stop.wait(heartbeat_s):
            try:
                self.heartbeat()
            except Exception:  # a transient storage error: the next beat tries again
                logger.warning("output %s: could not refresh the lock heartbeat", self.output, exc_info=True)

    def heartbeat(self) -> None:
        """Refresh ``heartbeat_at``; on finding the lock no longer ours, mark it lost and say so."""
        with self._mutex:
            if self._released or self.lost:
                return
            record = dataclasses.replace(self.record, heartbeat_at=_utc(time.time()))
            version = self._store.refresh(record.to_bytes(), self._version)
            if version is None:
                self.lost = True
                logger.error(
                    "output %s: the lock %s was taken over by another run", self.output, self._store.where
                )
                return
            self.record, self._version = record, version

    def ensure_held(self) -> None:
        """Refresh the lock now and raise OutputLocked if another run took it (call before publishing)."""
        self.heartbeat()
        if self.lost or self._released:
            raise OutputLocked(
                f"output {self.output}: this run no longer holds the lock {self._store.where} "
                "(another run took it over); nothing was published"
            )

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still ours; safe to call twice."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._mutex:
            if self._released:
                return
            self._released = True
            if not self.lost and not self._store.delete(self._version):
                logger.warning("output %s: the lock was no longer ours; left it in place", self.output)

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def acquire(
    output: str,
    *,
    stale_after_s: float = 600.0,
    heartbeat_s: float | None = None,
    command: str | None = None,
) -> OutputLock:
    """Take ``OUTPUT/_lnq/lock.json`` or raise OutputLocked naming the run that holds it."""
    store = _store(output)
    now = time.time()
    record = LockRecord(
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=_utc(now),
        heartbeat_at=_utc(now),
        command=command if command is not None else " ".join(sys.argv),
        pid_started=process_started(os.getpid()),
        token=uuid.uuid4().hex,
    )
    beat_s = heartbeat_s if heartbeat_s is not None else min(60.0, stale_after_s / 4)
    data = record.to_bytes()
    for _ in range(_ATTEMPTS):
        version = store.create(data)
        if version is not None:
            return OutputLock(output, store, record, version, heartbeat_s=beat_s)
        found = store.read()
        if found is None:
            continue  # released between our create and our read
        raw, version = found
        try:
            holder = LockRecord.from_bytes(raw)
        except ValueError as exc:
            raise OutputLocked(
                f"output {output} has an unreadable lock {store.where}; "
                "if no lnq run is writing this output, delete it and retry"
            ) from exc
        if holder.token == record.token:  # our create went through and a retry of it was refused
            return OutputLock(output, store, record, version, heartbeat_s=beat_s)
        reason = stale_reason(holder, stale_after_s=stale_after_s, now=time.time())
        if reason is None:
            raise OutputLocked(_locked_message(output, holder))
        version = store.take_over(data, version)
        if version is not None:
            logger.warning(
                "output %s: taking over a stale lock of host %s, PID %d (%s)",
                output,
                holder.host,
                holder.pid,
                reason,
            )
            return OutputLock(output, store, record, version, heartbeat_s=beat_s)
    raise OutputLocked(
        f"output {output}: could not take the lock {store.where} ({_ATTEMPTS} tries, contended)"
    )

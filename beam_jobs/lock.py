"""One writer per output folder: a lock file ``OUTPUT/_lnq/lock.json``, local or on Cloud Storage.

Two runs writing one output folder silently mixed their rows (issue 10), so a run takes this lock
before it touches the output and a second run is refused with a message naming the holder. The lock
holds JSON ``{host, pid, started_at, heartbeat_at, command, pid_started, token, job}``:
``pid_started`` (the process start time from /proc) tells a reused PID from the holder, ``token``
tells our lock from a later one. Every change is conditional so that of two runs racing, exactly one
wins: locally a whole file linked into place (``link`` fails when the name exists) plus a
``flock``-guarded check-and-replace, on gs:// a generation precondition.

The lock spans the job wherever it runs. The launcher takes it before anything is submitted and
refreshes its heartbeat about every minute while it runs the job itself (the local runner). When the
job runs without the launcher (Dataflow, a flex template), the launcher hands the lock to the job
(:meth:`OutputLock.hand_to_job`, ``job`` records the runner and, when known, the job's id): the
job's workers refresh ``job.worker_heartbeat_at`` (:class:`JobHeartbeat`) and its last step
(publishing, or finishing a training set) runs only while the job still holds it and releases it by
token (:func:`last_step`). A lock is stale when

- its holder ran on this host and is gone, or its heartbeat is older than ``stale_after_s``
  (launcher-held);
- its job is known to have ended (a job-state lookup the caller passes, e.g. Dataflow's API), its
  workers' heartbeat is older than ``stale_after_s``, or no worker beat within ``job_grace_s`` of
  the handover (a job that failed, was cancelled, or never started) (job-held);

and a stale lock is taken over with one WARNING line.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from pipeline.locations import is_gcs, is_remote
from pipeline.outputs.layout import LOCK

logger = logging.getLogger(__name__)

LOCK_NAME = LOCK
_ATTEMPTS = 20


class OutputLocked(Exception):
    """Another run holds (or may hold) the output folder; the message is one line for the user."""


JOB_GRACE_S = 3600.0
"""How long a lock handed to a job waits for the job's first worker heartbeat before it counts as
stale (Dataflow starts workers in minutes; a job queued for GPUs can take longer: then pass more)."""
TERMINAL_JOB_STATES = frozenset(
    {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"}
)


@dataclass(frozen=True)
class JobHandle:
    """The job a lock was handed to: one that runs without the launcher (Dataflow, a template)."""

    runner: str
    handed_at: str
    job_id: str | None = None
    job_name: str | None = None
    project: str | None = None
    region: str | None = None
    worker_heartbeat_at: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> JobHandle:
        if not isinstance(data, dict):
            raise TypeError(f"job is {type(data).__name__}, not an object")
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: (None if v is None else str(v)) for k, v in data.items() if k in fields}
        return cls(**values)

    def describe(self) -> str:
        return f"{self.runner} job {self.job_id}" if self.job_id else f"a {self.runner} job"


JobState = Callable[[JobHandle], "str | None"]
"""Looks up the state of a job (``JOB_STATE_RUNNING``, ``JOB_STATE_FAILED``...); None when unknown."""


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
    job: JobHandle | None = None

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
                job=None if data.get("job") is None else JobHandle.from_dict(data["job"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a lock record: {raw[:80]!r}") from exc


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> str:
    """Now, as lock records write times."""
    return _utc(time.time())


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


def stale_reason(
    record: LockRecord,
    *,
    stale_after_s: float,
    now: float,
    job_grace_s: float = JOB_GRACE_S,
    job_state: JobState | None = None,
) -> str | None:
    """Why ``record`` no longer protects a run, or None while its holder may still be writing."""
    if record.job is not None:
        return _job_stale_reason(
            record.job, stale_after_s=stale_after_s, now=now, job_grace_s=job_grace_s, job_state=job_state
        )
    if record.host == socket.gethostname() and holder_gone(record):
        return "no longer running"
    try:
        silent_s = now - _seconds(record.heartbeat_at)
    except ValueError:
        return None
    if silent_s > stale_after_s:
        return f"no heartbeat for {silent_s:.0f} s"
    return None


def _job_stale_reason(
    job: JobHandle, *, stale_after_s: float, now: float, job_grace_s: float, job_state: JobState | None
) -> str | None:
    if job.job_id and job_state is not None:
        try:
            state = job_state(job)
        except Exception as exc:  # no credentials, no network: fall back to the heartbeats
            logger.debug("could not look up the state of %s: %s", job.describe(), exc)
            state = None
        if state in TERMINAL_JOB_STATES:
            return f"{job.describe()} ended: {state}"
        if state is not None:
            return None  # the job runs: its lock holds, whatever its heartbeat says
    try:
        if job.worker_heartbeat_at:
            silent_s = now - _seconds(job.worker_heartbeat_at)
            return (
                f"{job.describe()}: no worker heartbeat for {silent_s:.0f} s"
                if silent_s > stale_after_s
                else None
            )
        waited_s = now - _seconds(job.handed_at)
    except ValueError:
        return None
    if waited_s > job_grace_s:
        return f"{job.describe()} never started: no worker heartbeat {waited_s:.0f} s after it was submitted"
    return None


def _locked_message(output: str, holder: LockRecord) -> str:
    if holder.job is not None:
        return (
            f"output {output} is being written by {holder.job.describe()} (launched from host {holder.host}, "
            f"since {holder.started_at}); wait for it to finish or cancel it"
        )
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
        """Write the whole record under a temporary name, then link it into place: ``link`` fails
        when the lock exists, and a full disk fails the write before any lock file appears (an
        empty lock would block every later run)."""
        temp = self.path.with_name(f"lock.json.new-{uuid.uuid4().hex}")
        try:
            fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(temp, self.path)
        except FileExistsError:
            return None
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
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
            try:
                temp.write_bytes(data)
                os.replace(temp, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
            return data

    def delete(self, version: bytes) -> bool:
        with self._guarded():
            if self._read() != version:
                return False
            self.path.unlink()
            return True


def _storage_client() -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]

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
    if is_gcs(output):
        return _GcsStore(output)
    if is_remote(output):
        raise ValueError(f"output {output}: only local folders and gs:// can be locked")
    return _LocalStore(Path(output))


class OutputLock:
    """A held lock: refreshed by a heartbeat thread until ``release()`` (or the end of a with block),
    or until it is handed to a job (:meth:`hand_to_job`)."""

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
        self.released_by_job = False
        self.handed = False
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), name="lnq-lock", daemon=True)
        self._thread.start()

    @property
    def token(self) -> str:
        return self.record.token

    def _beat(self, heartbeat_s: float) -> None:
        while not self._stop.wait(heartbeat_s):
            try:
                self.heartbeat()
            except Exception:  # a transient storage error: the next beat tries again
                logger.warning("output %s: could not refresh the lock heartbeat", self.output, exc_info=True)

    def heartbeat(self) -> None:
        """Refresh ``heartbeat_at``; a lock that is gone was released by the job's last step (the
        local runner runs it in this process); one replaced by another run's is marked lost."""
        with self._mutex:
            if self._released or self.lost or self.handed or self.released_by_job:
                return
            record = dataclasses.replace(self.record, heartbeat_at=_utc(time.time()))
            version = self._store.refresh(record.to_bytes(), self._version)
            if version is not None:
                self.record, self._version = record, version
                return
            if self._store.read() is None:
                self.released_by_job = True
                return
            self.lost = True
            logger.error(
                "output %s: the lock %s was taken over by another run", self.output, self._store.where
            )

    def ensure_held(self) -> None:
        """Refresh the lock now and raise OutputLocked if another run took it (call before publishing)."""
        self.heartbeat()
        if self.lost or self._released or self.released_by_job:
            raise OutputLocked(
                f"output {self.output}: this run no longer holds the lock {self._store.where} "
                "(another run took it over); nothing was published"
            )

    def hand_to_job(self, job: JobHandle) -> None:
        """The job runs on without this process: stop the heartbeat and record ``job`` in the lock,
        whose workers refresh it and whose last step releases it (see the module's docstring)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._mutex:
            if self._released or self.lost or self.released_by_job:
                return
            record = dataclasses.replace(self.record, job=job)
            version = self._store.refresh(record.to_bytes(), self._version)
            if version is None:
                self.lost = self._store.read() is not None
                self.released_by_job = not self.lost
                return
            self.record, self._version, self.handed = record, version, True

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still ours and not handed to a job;
        safe to call twice."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._mutex:
            if self._released:
                return
            self._released = True
            if self.lost or self.handed or self.released_by_job:
                return
            if not self._store.delete(self._version):
                if self._store.read() is None:  # released by the job's last step meanwhile
                    return
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
    job_grace_s: float = JOB_GRACE_S,
    job_state: JobState | None = None,
) -> OutputLock:
    """Take ``OUTPUT/_lnq/lock.json`` or raise OutputLocked naming the run (or job) that holds it.
    ``job_state`` looks up the state of a job a lock was handed to (see the module's docstring)."""
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
        if not raw.strip():  # never ours: every record is written whole before it appears
            reason: str | None = "empty (left by a failed write)"
            holder = None
        else:
            try:
                holder = LockRecord.from_bytes(raw)
            except ValueError as exc:
                raise OutputLocked(
                    f"output {output} has an unreadable lock {store.where}; "
                    "if no lnq run is writing this output, delete it and retry"
                ) from exc
            if holder.token == record.token:  # our create went through and a retry of it was refused
                return OutputLock(output, store, record, version, heartbeat_s=beat_s)
            reason = stale_reason(
                holder,
                stale_after_s=stale_after_s,
                now=time.time(),
                job_grace_s=job_grace_s,
                job_state=job_state,
            )
            if reason is None:
                raise OutputLocked(_locked_message(output, holder))
        version = store.take_over(data, version)
        if version is not None:
            whose = "" if holder is None else f" of host {holder.host}, PID {holder.pid}"
            logger.warning("output %s: taking over a stale lock%s (%s)", output, whose, reason)
            return OutputLock(output, store, record, version, heartbeat_s=beat_s)
    raise OutputLocked(
        f"output {output}: could not take the lock {store.where} ({_ATTEMPTS} tries, contended)"
    )


# ---- the job's side: its workers and its last step know the lock by its token ----------------------


def _held_by(store: _Store, token: str) -> tuple[LockRecord, Any] | None:
    """The lock's record and version when ``token`` holds it; None otherwise."""
    found = store.read()
    if found is None:
        return None
    raw, version = found
    try:
        record = LockRecord.from_bytes(raw)
    except ValueError:
        return None
    return (record, version) if record.token == token else None


def ensure_token(output: str, token: str, *, unwritten: str = "nothing was published") -> None:
    """Raise OutputLocked unless the run of ``token`` still holds the lock of ``output``
    (the job's last step calls it before publishing); ``unwritten`` says what was not done."""
    store = _store(output)
    if _held_by(store, token) is None:
        raise OutputLocked(
            f"output {output}: this run no longer holds the lock {store.where} "
            f"(another run took it over, or it was deleted); {unwritten}"
        )


@contextlib.contextmanager
def last_step(
    output: str, token: str, *, release: bool = True, unwritten: str = "nothing was published"
) -> Iterator[None]:
    """A job's last step under the output's lock: it runs only while the run of ``token`` still
    holds the lock (else :class:`OutputLocked`, saying ``unwritten``), and, with ``release``, lets
    go of the lock once the step is done (a step that fails leaves the lock to go stale)."""
    ensure_token(output, token, unwritten=unwritten)
    yield
    if release and not release_token(output, token):
        logger.warning("output %s: the lock was no longer this run's at the end", output)


def release_token(output: str, token: str) -> bool:
    """Delete the lock of ``output`` if the run of ``token`` holds it (the job's last step);
    whether it did."""
    store = _store(output)
    held = _held_by(store, token)
    return held is not None and store.delete(held[1])


def beat_for_job(output: str, token: str) -> bool:
    """One worker heartbeat of a job-held lock; False when the lock is no longer this run's.
    Workers race each other: a refresh that loses to another worker's is as good as its own."""
    store = _store(output)
    held = _held_by(store, token)
    if held is None:
        return False
    record, version = held
    if record.job is None:  # still the launcher's (local runner): it beats itself
        return True
    job = dataclasses.replace(record.job, worker_heartbeat_at=_utc(time.time()))
    store.refresh(dataclasses.replace(record, job=job).to_bytes(), version)
    return True


class JobHeartbeat:
    """Refreshes a job-held lock from a worker about every ``every_s`` seconds, once per process and
    lock however many DoFns ask (:meth:`start` is idempotent); stops when the lock is no longer the
    job's."""

    _started: dict[tuple[str, str], JobHeartbeat] = {}
    _guard = threading.Lock()

    def __init__(self, output: str, token: str, every_s: float) -> None:
        self.output, self.token, self.every_s = output, token, every_s
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lnq-job-lock", daemon=True)

    @classmethod
    def start(cls, output: str, token: str, every_s: float = 60.0) -> JobHeartbeat:
        with cls._guard:
            beat = cls._started.get((output, token))
            if beat is None or beat.stopped.is_set():
                beat = cls._started[(output, token)] = cls(output, token, every_s)
                beat._thread.start()
            return beat

    def _run(self) -> None:
        while True:
            try:
                if not beat_for_job(self.output, self.token):
                    break
            except Exception:  # a transient storage error: the next beat tries again
                logger.warning(
                    "output %s: could not refresh the job's lock heartbeat", self.output, exc_info=True
                )
            if self.stopped.wait(self.every_s):
                break
        self.stopped.set()

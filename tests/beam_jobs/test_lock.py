"""The output lock: one writer per output folder, locally and on the GCS emulator (with preconditions)."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beam_jobs import lock
from beam_jobs.lock import LockRecord, OutputLocked, acquire
from tests.support.s3 import free_port, start_server

REPO = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _record(*, host: str = HOST, pid: int, pid_started: int | None = None, age_s: float = 0.0) -> LockRecord:
    stamp = lock._utc(time.time() - age_s)
    return LockRecord(
        host=host,
        pid=pid,
        started_at=stamp,
        heartbeat_at=stamp,
        command="lnq run --output somewhere",
        pid_started=pid_started,
        token="someone-else",
    )


@pytest.fixture()
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


# --- local ------------------------------------------------------------------------------------------


def _plant(output: Path, record: LockRecord) -> Path:
    path = output / lock.LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(record.to_bytes())
    return path


def test_second_acquire_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with acquire(str(tmp_path)) as held:
        written = json.loads((tmp_path / lock.LOCK_NAME).read_text())
        assert {"host", "pid", "started_at", "heartbeat_at", "command"} <= written.keys()
        with pytest.raises(OutputLocked, match=rf"host {HOST}, PID {os.getpid()}, since ") as info:
            acquire(str(tmp_path))
        assert "\n" not in str(info.value)
        assert str(info.value).startswith(f"output {tmp_path} is being written by another lnq run (")
        assert held.record.started_at in str(info.value)


def test_release_then_acquire_works(tmp_path: Path) -> None:
    first = acquire(str(tmp_path))
    first.release()
    first.release()  # idempotent
    assert not (tmp_path / lock.LOCK_NAME).exists()
    with acquire(str(tmp_path)):
        assert (tmp_path / lock.LOCK_NAME).exists()
    assert not (tmp_path / lock.LOCK_NAME).exists()


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = _dead_pid()
    _plant(tmp_path, _record(pid=dead))
    with caplog.at_level(logging.WARNING, logger="beam_jobs.lock"), acquire(str(tmp_path)) as held:
        assert json.loads((tmp_path / lock.LOCK_NAME).read_text())["pid"] == os.getpid()
        assert held.record.pid == os.getpid()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"taking over a stale lock of host {HOST}, PID {dead} (no longer running)" in warnings[0]


def test_lock_of_a_live_process_is_not_taken_over(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    path = _plant(tmp_path, _record(pid=sleeper.pid, pid_started=lock.process_started(sleeper.pid)))
    before = path.read_bytes()
    with pytest.raises(OutputLocked, match=rf"\(host {HOST}, PID {sleeper.pid}, since "):
        acquire(str(tmp_path))
    assert path.read_bytes() == before


def test_reused_pid_is_not_mistaken_for_the_holder(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    started = lock.process_started(sleeper.pid)
    assert started is not None
    _plant(tmp_path, _record(pid=sleeper.pid, pid_started=started - 1))  # the PID now runs another process
    with caplog.at_level(logging.WARNING, logger="beam_jobs.lock"), acquire(str(tmp_path)):
        pass
    assert f"PID {sleeper.pid} (no longer running)" in caplog.text


def test_other_host_lock_is_stale_only_after_its_heartbeat_ages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _plant(tmp_path, _record(host="elsewhere", pid=_dead_pid(), age_s=30))
    with pytest.raises(OutputLocked, match=r"host elsewhere, PID"):
        acquire(str(tmp_path), stale_after_s=60)
    with caplog.at_level(logging.WARNING, logger="beam_jobs.lock"), acquire(str(tmp_path), stale_after_s=10):
        pass
    assert "taking over a stale lock of host elsewhere" in caplog.text
    assert re.search(r"\(no heartbeat for 3\d s\)", caplog.text)


def test_release_does_not_delete_someone_elses_lock(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    held = acquire(str(tmp_path))
    theirs = _plant(tmp_path, _record(host="elsewhere", pid=1))  # e.g. taken over after our heartbeat stopped
    with caplog.at_level(logging.WARNING, logger="beam_jobs.lock"):
        held.release()
    assert LockRecord.from_bytes(theirs.read_bytes()).host == "elsewhere"
    assert "no longer ours" in caplog.text


def test_heartbeat_refreshes_and_notices_a_takeover(tmp_path: Path) -> None:
    held = acquire(str(tmp_path), heartbeat_s=3600)
    stale = dataclasses.replace(held.record, heartbeat_at="2000-01-01T00:00:00Z")
    held.record = stale
    held.heartbeat()
    assert json.loads((tmp_path / lock.LOCK_NAME).read_text())["heartbeat_at"] != "2000-01-01T00:00:00Z"
    _plant(tmp_path, _record(host="elsewhere", pid=1))
    with pytest.raises(OutputLocked, match=r"no longer holds the lock .*; nothing was published"):
        held.ensure_held()
    assert held.lost
    held.release()
    assert LockRecord.from_bytes((tmp_path / lock.LOCK_NAME).read_bytes()).host == "elsewhere"


def test_unreadable_lock_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / lock.LOCK_NAME
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(OutputLocked, match=r"has an unreadable lock .*lock\.json; if no lnq run"):
        acquire(str(tmp_path))


def _contender(output: str, start: Any, attempted: Any, results: Any, delay_s: float) -> None:
    """Try for the lock when the other contender does; a winner holds it until the other has tried
    too (both wait at ``attempted``), however late the other's attempt comes, so no timing decides
    the outcome: two winners can only mean two holders at once."""
    start.wait()
    time.sleep(delay_s)  # a contender slowed down (a loaded machine) tries late
    try:
        held = acquire(output)
    except OutputLocked:
        results.put("refused")
        attempted.wait()
        return
    results.put("won")
    attempted.wait()
    held.release()


@pytest.mark.parametrize("late_s", [0.0, 0.4], ids=["together", "one-late"])
@pytest.mark.parametrize("stale_first", [False, True], ids=["free", "stale"])
def test_two_processes_racing_never_both_hold(tmp_path: Path, stale_first: bool, late_s: float) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(10 if late_s == 0 else 2):
        output = tmp_path / f"round{round_}"
        if stale_first:
            _plant(output, _record(pid=_dead_pid()))
        start, attempted, results = (
            context.Barrier(2, timeout=60),
            context.Barrier(2, timeout=60),
            context.Queue(),
        )
        procs = [
            context.Process(target=_contender, args=(str(output), start, attempted, results, delay))
            for delay in (0.0, late_s)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0
        outcomes = sorted(results.get(timeout=5) for _ in procs)
        assert outcomes == ["refused", "won"], f"round {round_}: {outcomes}"
        assert not (output / lock.LOCK_NAME).exists()


def test_other_schemes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"output s3://b/x: only local folders and gs:// can be locked"):
        acquire("s3://b/x")


# --- gs:// against the emulator patched to honour ifGenerationMatch ---------------------------------

BUCKET = "lnq-lock"


@pytest.fixture(scope="module")
def gcs_lock_bucket() -> Iterator[str]:
    """A bucket on the patched emulator; STORAGE_EMULATOR_HOST points the lock's client at it."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tests.support.gcs_preconditions",
        "--port",
        str(port),
        "--bucket",
        BUCKET,
    ]
    previous_cwd = os.getcwd()
    os.chdir(REPO)  # so that ``-m tests.support...`` resolves
    try:
        proc, url = start_server(command, port)
    finally:
        os.chdir(previous_cwd)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    yield BUCKET
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous
    proc.terminate()
    proc.wait(timeout=10)


def _blob(name: str) -> Any:
    return lock._storage_client().bucket(BUCKET).blob(name)


def test_gcs_emulator_enforces_generation_preconditions(gcs_lock_bucket: str) -> None:
    from google.api_core.exceptions import PreconditionFailed

    blob = _blob("precondition/probe.json")
    blob.upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailed, match="412"):
        _blob("precondition/probe.json").upload_from_string(b"second", if_generation_match=0)
    with pytest.raises(PreconditionFailed, match="pre-conditions you specified did not hold"):
        _blob("precondition/probe.json").delete(if_generation_match=int(blob.generation) + 1)
    assert _blob("precondition/probe.json").download_as_bytes() == b"first"
    _blob("precondition/probe.json").delete(if_generation_match=int(blob.generation))


def test_gcs_second_acquire_is_refused_naming_the_holder(gcs_lock_bucket: str) -> None:
    output = f"gs://{gcs_lock_bucket}/held"
    with acquire(output) as held:
        assert held._store.where == f"gs://{BUCKET}/held/_lnq/lock.json"
        with pytest.raises(
            OutputLocked, match=rf"^output {output} is .* \(host {HOST}, PID {os.getpid()}, since "
        ):
            acquire(output)


def test_gcs_release_then_acquire_works(gcs_lock_bucket: str) -> None:
    output = f"gs://{gcs_lock_bucket}/again/"
    first = acquire(output)
    first.heartbeat()  # a new generation: release must delete that one
    first.release()
    first.release()
    assert lock._storage_client().bucket(BUCKET).get_blob("again/_lnq/lock.json") is None
    with acquire(output):
        pass
    assert lock._storage_client().bucket(BUCKET).get_blob("again/_lnq/lock.json") is None


def test_gcs_stale_lock_of_a_dead_pid_is_taken_over_with_a_warning(
    gcs_lock_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = _dead_pid()
    _blob("stale/_lnq/lock.json").upload_from_string(_record(pid=dead).to_bytes())
    with caplog.at_level(logging.WARNING, logger="beam_jobs.lock"), acquire(f"gs://{gcs_lock_bucket}/stale"):
        assert json.loads(_blob("stale/_lnq/lock.json").download_as_bytes())["pid"] == os.getpid()
    assert f"taking over a stale lock of host {HOST}, PID {dead} (no longer running)" in caplog.text


def test_gcs_release_does_not_delete_someone_elses_lock(gcs_lock_bucket: str) -> None:
    held = acquire(f"gs://{gcs_lock_bucket}/theirs")
    _blob("theirs/_lnq/lock.json").upload_from_string(_record(host="elsewhere", pid=1).to_bytes())
    held.release()
    assert LockRecord.from_bytes(_blob("theirs/_lnq/lock.json").download_as_bytes()).host == "elsewhere"


# --- a lock handed to a job that runs without its launcher (Dataflow, a flex template) --------------


def test_a_lock_handed_to_a_job_outlives_its_launcher_and_its_last_step_releases_it(tmp_path: Path) -> None:
    held = acquire(str(tmp_path), heartbeat_s=3600)
    held.hand_to_job(lock.JobHandle(runner="DataflowRunner", handed_at=lock.utc_now(), job_id="2026-1"))
    held.release()  # the launcher exits: the job holds on
    record = LockRecord.from_bytes((tmp_path / lock.LOCK_NAME).read_bytes())
    assert record.job is not None and record.job.job_id == "2026-1" and record.token == held.token
    with pytest.raises(
        OutputLocked, match=r"being written by DataflowRunner job 2026-1 \(launched from host"
    ):
        acquire(str(tmp_path))
    # a worker beats, the last step checks the token, publishes, releases
    assert lock.beat_for_job(str(tmp_path), held.token)
    beaten = LockRecord.from_bytes((tmp_path / lock.LOCK_NAME).read_bytes())
    assert beaten.job is not None and beaten.job.worker_heartbeat_at is not None
    lock.ensure_token(str(tmp_path), held.token)
    with pytest.raises(OutputLocked, match="no longer holds the lock"):
        lock.ensure_token(str(tmp_path), "another-run")
    assert not lock.release_token(str(tmp_path), "another-run")
    assert lock.release_token(str(tmp_path), held.token)
    assert not (tmp_path / lock.LOCK_NAME).exists()
    assert not lock.beat_for_job(str(tmp_path), held.token)  # its workers stop beating


def _job_record(*, handed_age_s: float, beat_age_s: float | None, job_id: str | None = "j1") -> LockRecord:
    now = time.time()
    return dataclasses.replace(
        _record(pid=_dead_pid()),
        job=lock.JobHandle(
            runner="DataflowRunner",
            handed_at=lock._utc(now - handed_age_s),
            job_id=job_id,
            project="p",
            region="r",
            worker_heartbeat_at=None if beat_age_s is None else lock._utc(now - beat_age_s),
        ),
    )


@pytest.mark.parametrize(
    ("ages", "state", "stale"),
    [
        # the job's state, when it can be looked up, decides
        (dict(handed_age_s=30, beat_age_s=None), "JOB_STATE_FAILED", "ended: JOB_STATE_FAILED"),
        (dict(handed_age_s=30, beat_age_s=5), "JOB_STATE_CANCELLED", "ended: JOB_STATE_CANCELLED"),
        (dict(handed_age_s=99_999, beat_age_s=9_999), "JOB_STATE_RUNNING", None),  # queued or slow
        # else its workers' heartbeats: silent for longer than the stale time
        (dict(handed_age_s=3000, beat_age_s=30), None, None),
        (dict(handed_age_s=3000, beat_age_s=900), None, "no worker heartbeat for 9"),
        # or none ever, for longer than the grace a job has to start
        (dict(handed_age_s=1800, beat_age_s=None), None, None),
        (dict(handed_age_s=7200, beat_age_s=None), None, "never started"),
        (dict(handed_age_s=7200, beat_age_s=None, job_id=None), "JOB_STATE_RUNNING", "never started"),
    ],
)
def test_a_job_held_lock_is_stale_only_when_its_job_is_known_to_be_over(
    tmp_path: Path, ages: dict, state: str | None, stale: str | None
) -> None:
    """The dead launcher PID of a job-held lock never makes it stale: only the job's state (looked
    up when its id is known), its workers' heartbeat, or the grace a job has to start."""
    record = _job_record(**ages)  # made now: ages are counted from the test's own time
    _plant(tmp_path, record)
    asked: list[str] = []

    def job_state(job: lock.JobHandle) -> str | None:
        asked.append(job.job_id or "")
        return state

    if stale is None:
        with pytest.raises(OutputLocked, match="being written by DataflowRunner job"):
            acquire(str(tmp_path), stale_after_s=600, job_state=job_state)
        return
    reason = lock.stale_reason(record, stale_after_s=600, now=time.time(), job_state=job_state)
    assert reason is not None and stale in reason
    with acquire(str(tmp_path), stale_after_s=600, job_state=job_state):
        pass


def test_a_job_state_lookup_that_fails_falls_back_to_the_heartbeats(tmp_path: Path) -> None:
    def unreachable(job: lock.JobHandle) -> str | None:
        raise RuntimeError("no credentials")

    fresh = _job_record(handed_age_s=60, beat_age_s=10)
    assert lock.stale_reason(fresh, stale_after_s=600, now=time.time(), job_state=unreachable) is None
    silent = _job_record(handed_age_s=9000, beat_age_s=5000)
    assert "no worker heartbeat" in str(
        lock.stale_reason(silent, stale_after_s=600, now=time.time(), job_state=unreachable)
    )


def test_the_local_runners_last_step_releases_the_launchers_lock_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Locally the job's last step runs in the launcher: it releases by token; the launcher's
    heartbeat and release then find the lock gone, and say nothing of a takeover."""
    held = acquire(str(tmp_path), heartbeat_s=3600)
    assert lock.release_token(str(tmp_path), held.token)
    with caplog.at_level(logging.WARNING, logger="beam_jobs.lock"):
        held.heartbeat()
        held.release()
    assert held.released_by_job and not held.lost
    assert caplog.records == []


def test_a_full_disk_leaves_no_lock_and_an_empty_one_is_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock is written whole before it appears: a write that fails leaves none (an empty
    lock.json blocked every later run); an empty one left by an older version is taken over."""
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lock.os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        acquire(str(tmp_path))
    monkeypatch.setattr(lock.os, "write", real_write)
    assert sorted(p.name for p in (tmp_path / "_lnq").iterdir()) == ["lock.guard"]
    (tmp_path / lock.LOCK_NAME).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="beam_jobs.lock"), acquire(str(tmp_path)):
        pass
    assert "taking over a stale lock (empty (left by a failed write))" in caplog.text

"""The isolated child: a crash, panic, hang or memory bomb is that series' error, never the job's."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.enums import Stage
from pipeline.isolation import GIB, IsolatedFailure, Limits, kill_all, run_isolated
from pipeline.stage_clock import StageClock
from tests.support import isolated_targets as targets

LIMITS = Limits(timeout_s=60.0, memory_bytes=2 * GIB)


def _failure(fn, limits: Limits = LIMITS, **kwargs) -> IsolatedFailure:  # type: ignore[no-untyped-def]
    with pytest.raises(IsolatedFailure) as caught:
        run_isolated(fn, series_uid="1.2.3", limits=limits, first_stage=Stage.FETCH, **kwargs)
    assert caught.value.error.message.startswith("series 1.2.3: ")
    return caught.value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_result_comes_back_from_another_process() -> None:
    out = run_isolated(targets.returns, series_uid="1.2.3", limits=LIMITS, first_stage=Stage.FETCH, value=5)
    assert out["value"] == 5 and out["pid"] != os.getpid()


def test_a_panic_is_the_series_error_at_its_stage() -> None:
    error = _failure(targets.panics).error
    assert (error.stage, error.error_type) == (Stage.DECODE, "PanicException")
    assert "unwrap" in error.message


@pytest.mark.parametrize(
    ("fn", "stage", "signal_text"),
    [
        (targets.aborts, Stage.DECODE, "signal 6, SIGABRT"),
        (targets.segfaults, Stage.REFERENCE, "signal 11, SIGSEGV"),
    ],
)
def test_a_native_crash_is_reported_by_its_signal(fn, stage: Stage, signal_text: str) -> None:  # type: ignore[no-untyped-def]
    error = _failure(fn).error
    assert (error.stage, error.error_type) == (stage, "DecoderCrash")
    assert f"the decoding process crashed ({signal_text}" in error.message


def test_a_crash_after_decoding_is_named_by_the_stage_it_was_in() -> None:
    """The measuring child crashing is not "the decoding process crashed"."""
    error = _failure(targets.crashes_measuring).error
    assert (error.stage, error.error_type) == (Stage.SEG_WRITE, "ProcessCrash")
    assert "the seg_write process crashed (signal 11, SIGSEGV" in error.message
    assert "decoding" not in error.message


def test_the_childs_stage_seconds_come_back_into_the_parents_clock() -> None:
    clock = StageClock()
    clock.add(Stage.DECODE, 1.0)  # a stage timed before, in the parent
    out = run_isolated(
        targets.times_two_stages,
        series_uid="1.2.3",
        limits=LIMITS,
        first_stage=Stage.FETCH,
        clock=clock,
        fetch_s=0.3,
        decode_s=0.2,
    )
    assert out == "done" and clock.current == Stage.DECODE
    assert set(clock.seconds) == {Stage.FETCH, Stage.DECODE}
    assert 0.3 <= clock.seconds[Stage.FETCH] < 2.0  # the child starts timing in first_stage
    assert 1.2 <= clock.seconds[Stage.DECODE] < 3.0  # added to what the parent had


def test_an_exit_without_result_is_an_error() -> None:
    error = _failure(targets.exits).error
    assert "exited with code 7 without a result" in error.message and error.stage == Stage.DECODE


def test_a_hang_is_stopped_and_leaves_no_process_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    start = time.monotonic()
    error = _failure(
        targets.hangs_with_grandchild, Limits(timeout_s=2.0, memory_bytes=None), pid_file=str(pid_file)
    ).error
    assert time.monotonic() - start < 10
    assert (error.stage, error.error_type) == (Stage.FETCH, "SeriesTimeout")
    assert "series time limit of 2 s (during fetch)" in error.message
    assert not _alive(int(pid_file.read_text()))


def test_a_memory_bomb_is_refused_by_the_limit() -> None:
    error = _failure(targets.allocates, Limits(timeout_s=60.0, memory_bytes=1 * GIB), gib=4.0).error
    assert (error.stage, error.error_type) == (Stage.REFERENCE, "MemoryError")
    assert "memory limit of 1 GB" in error.message


def test_kill_all_stops_running_children(tmp_path: Path) -> None:
    """What the job's SIGINT/SIGTERM handler calls: no child, no grandchild survives."""
    pid_file = tmp_path / "grandchild.pid"
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_isolated(
                targets.hangs_with_grandchild,
                series_uid="1.2.3",
                limits=Limits(timeout_s=120.0, memory_bytes=None),
                first_stage=Stage.FETCH,
                pid_file=str(pid_file),
            )
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kill_all()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome[0], IsolatedFailure) and "SIGKILL" in outcome[0].error.message
    assert not _alive(int(pid_file.read_text()))


def test_starting_the_fork_server_early_is_the_server_children_come_from() -> None:
    """start_fork_server starts (or keeps) the one fork server without waiting for its preload;
    the isolated children are then forked by that server."""
    from multiprocessing import forkserver

    from pipeline.isolation import start_fork_server

    start_fork_server()
    server = forkserver._forkserver._forkserver_pid
    assert server is not None and _alive(server)
    start_fork_server()  # a second call keeps the running one
    assert forkserver._forkserver._forkserver_pid == server
    out = run_isolated(targets.returns, series_uid="1.2.3", limits=LIMITS, first_stage=Stage.FETCH, value=1)
    assert out["ppid"] == server


def test_stopping_the_fork_server_kills_it_and_a_later_series_gets_a_new_one() -> None:
    """stop_fork_server (what ``lnq`` does just before it exits) kills the server at once; a
    series isolated afterwards still runs, from a new server."""
    from multiprocessing import forkserver

    from pipeline.isolation import start_fork_server, stop_fork_server

    start_fork_server()
    server = forkserver._forkserver._forkserver_pid
    assert server is not None and _alive(server)
    stop_fork_server()
    deadline = time.monotonic() + 10
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(server)
    out = run_isolated(targets.returns, series_uid="1.2.3", limits=LIMITS, first_stage=Stage.FETCH, value=2)
    assert out["value"] == 2 and out["ppid"] != server


def test_children_inherit_the_preload_frozen_out_of_the_garbage_collector() -> None:
    """The fork server freezes what its preload made (pipeline.warmup), so a child's full
    collections do not walk the libraries' hundreds of thousands of objects again."""
    frozen = run_isolated(targets.frozen_objects, series_uid="1.2.3", limits=LIMITS, first_stage=Stage.FETCH)
    assert frozen > 100_000

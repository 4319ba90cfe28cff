"""A bounded subprocess ends on time, keeps bounded output, and leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import bounded
from pipeline.bounded import kill_all, live_groups, run_bounded
from tests.support.faults import pid_alive, wait_until


def _family(tmp_path: Path, *, then: str = "wait") -> list[str]:
    """A shell that starts a sleeping grandchild, writes both pids to files, then ``then``."""
    return ["sh", "-c", f"sleep 60 & echo $! > {tmp_path}/grandchild; echo $$ > {tmp_path}/child; {then}"]


def _pids(tmp_path: Path) -> tuple[int, int]:
    def written(name: str) -> bool:
        path = tmp_path / name
        return path.exists() and path.read_text().endswith("\n")

    assert wait_until(lambda: written("grandchild") and written("child"), 10)
    return int((tmp_path / "child").read_text()), int((tmp_path / "grandchild").read_text())


def _all_dead(*pids: int) -> bool:
    if wait_until(lambda: not any(pid_alive(p) for p in pids), 5):
        return True
    for pid in pids:  # say who survived, and as what
        try:
            print(pid, Path(f"/proc/{pid}/stat").read_text(), Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError as exc:
            print(pid, exc)
    return False


@pytest.fixture(autouse=True)
def _no_group_left() -> Iterator[None]:
    yield
    assert live_groups() == ()


def test_ok_command_returns_its_output_and_code() -> None:
    done = run_bounded(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
        timeout_s=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert not (done.timed_out or done.stalled or done.ok)
    assert run_bounded(["true"], timeout_s=30).ok


def test_timeout_kills_child_and_grandchild(tmp_path: Path) -> None:
    start = time.monotonic()
    done = run_bounded(_family(tmp_path), timeout_s=0.5, grace_s=0.5)
    assert done.timed_out and not done.ok
    assert done.returncode < 0
    assert time.monotonic() - start < 5
    assert _all_dead(*_pids(tmp_path))


def test_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    start = time.monotonic()
    done = run_bounded([sys.executable, "-c", script], timeout_s=1.0, grace_s=0.3)
    assert done.timed_out and done.returncode == -signal.SIGKILL
    assert time.monotonic() - start < 5


def test_grandchild_left_behind_by_an_exited_child_is_killed(tmp_path: Path) -> None:
    """The shell exits at once; its grandchild still holds the output pipe: no wait, no survivor."""
    start = time.monotonic()
    done = run_bounded(_family(tmp_path, then="echo done"), timeout_s=30, grace_s=0.5)
    assert done.ok and done.stdout == "done\n"
    assert time.monotonic() - start < 5
    assert _all_dead(*_pids(tmp_path))


def test_output_is_bounded_to_its_tail() -> None:
    script = "import sys; sys.stdout.write(''.join(f'{i:06d}' for i in range(100000)))"
    done = run_bounded([sys.executable, "-c", script], timeout_s=30, max_output_bytes=600)
    assert done.ok and done.stdout_truncated and not done.stderr_truncated
    assert len(done.stdout) == 600 and done.stdout.endswith("099999")
    full = run_bounded([sys.executable, "-c", script], timeout_s=30, max_output_bytes=10**6)
    assert not full.stdout_truncated and len(full.stdout) == 600000


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("raised", [_Interrupted, KeyboardInterrupt])
def test_exception_in_the_caller_kills_the_group(tmp_path: Path, raised: type[BaseException]) -> None:
    def handler(number: int, frame: object) -> None:
        raise raised()

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(raised):
            run_bounded(_family(tmp_path), timeout_s=60, grace_s=0.5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert _all_dead(*_pids(tmp_path))


def test_kill_all_stops_every_live_group(tmp_path: Path) -> None:
    results = []
    worker = threading.Thread(target=lambda: results.append(run_bounded(_family(tmp_path), timeout_s=60)))
    worker.start()
    child, grandchild = _pids(tmp_path)
    assert wait_until(lambda: len(live_groups()) == 1, 5)
    kill_all()
    worker.join(10)
    assert not worker.is_alive()
    assert results[0].returncode == -signal.SIGKILL and not results[0].timed_out
    assert _all_dead(child, grandchild)


def test_idle_command_is_stopped_as_stalled() -> None:
    done = run_bounded(["sleep", "60"], timeout_s=30, idle_timeout_s=0.5, grace_s=0.5)
    assert done.stalled and not done.timed_out and not done.ok


def test_output_or_progress_counts_as_activity(tmp_path: Path) -> None:
    talking = "import time\nfor _ in range(10):\n    print('.', flush=True); time.sleep(0.1)"
    assert run_bounded([sys.executable, "-c", talking], timeout_s=30, idle_timeout_s=0.5).ok
    growing = tmp_path / "growing"
    writer = f"import time\nfor _ in range(10):\n    open({str(growing)!r}, 'a').write('x'); time.sleep(0.1)"
    done = run_bounded(
        [sys.executable, "-c", writer],
        timeout_s=30,
        idle_timeout_s=0.5,
        progress=lambda: growing.stat().st_size if growing.exists() else 0,
    )
    assert done.ok


def test_memory_limit_applies_to_the_command() -> None:
    allocate = "b = bytearray(384 * 2**20)"
    done = run_bounded([sys.executable, "-c", allocate], timeout_s=30, memory_bytes=256 * 2**20)
    assert done.returncode != 0 and "MemoryError" in done.stderr
    assert run_bounded([sys.executable, "-c", allocate], timeout_s=30).ok


_CALLER = textwrap.dedent(
    """
    import sys
    from pipeline.bounded import run_bounded
    from tests.support.signals import kill_on_signals  # as lnq's handler does
    command = ["sh", "-c", "sleep 60 & echo $! > {d}/grandchild; echo $$ > {d}/child; wait"]
    if sys.argv[1] == "handler":
        with kill_on_signals():
            run_bounded(command, timeout_s=60)
    else:
        run_bounded(command, timeout_s=60)
    """
)


def _start_caller(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[2])
    code = _CALLER.format(d=tmp_path)
    return subprocess.Popen(
        [sys.executable, "-c", code, mode], cwd=root, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"}
    )


def test_sigterm_to_a_caller_with_the_handlers_kills_the_group(tmp_path: Path) -> None:
    caller = _start_caller(tmp_path, "handler")
    try:
        child, grandchild = _pids(tmp_path)
        caller.send_signal(signal.SIGTERM)
        assert caller.wait(10) == -signal.SIGTERM  # it still dies of the signal, as before
        assert _all_dead(child, grandchild)
    finally:
        caller.kill()
        caller.wait()


def test_caller_killed_outright_takes_its_direct_child_along(tmp_path: Path) -> None:
    """SIGKILL runs no handler: the kernel kills the direct child (PR_SET_PDEATHSIG).

    Grandchildren are only reached through the group (timeouts, kill_all, handlers); s5cmd has none.
    """
    if bounded._PRCTL is None:
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    caller = _start_caller(tmp_path, "bare")
    try:
        child, grandchild = _pids(tmp_path)
        caller.kill()
        caller.wait(10)
        assert _all_dead(child)
    finally:
        caller.kill()
        caller.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(_pids(tmp_path)[1], signal.SIGKILL)  # the grandchild this test leaves

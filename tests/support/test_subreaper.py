"""The subreaper that tests use to check a run's own process tree, and only its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.faults import pid_alive, read_leftovers, under_subreaper

ORPHAN = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                         start_new_session=True)
print(child.pid, flush=True)
os._exit(int(sys.argv[1]))  # the parent goes; its child, in a session of its own, stays
"""


def test_a_process_that_outlives_the_run_is_found_however_orphaned_and_killed(tmp_path: Path) -> None:
    leftovers = tmp_path / "left.json"
    done = subprocess.run(
        under_subreaper([sys.executable, "-c", ORPHAN, "3"], leftovers, grace_s=0.3),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    orphan = int(done.stdout.split()[0])
    (found,) = read_leftovers(leftovers)
    assert found["pid"] == orphan and "time.sleep(300)" in str(found["cmdline"])
    assert not pid_alive(orphan)  # killed by the subreaper


def test_other_processes_on_the_machine_are_not_the_runs(tmp_path: Path) -> None:
    """A process started beside the run (another user's lnq, say) is not in its tree."""
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftovers = tmp_path / "left.json"
        done = subprocess.run(
            under_subreaper([sys.executable, "-c", "print('ok')"], leftovers, grace_s=0.1),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and done.stdout == "ok\n"
        assert read_leftovers(leftovers) == [] and pid_alive(neighbour.pid)
    finally:
        neighbour.kill()
        neighbour.wait()


def test_a_signal_reaches_the_command_and_its_status_comes_back(tmp_path: Path) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        under_subreaper(
            [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], tmp_path / "l"
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert read_leftovers(tmp_path / "l") == []

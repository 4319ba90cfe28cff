"""Run a command as the child of a subreaper, and say which of its processes outlived it.

``python -m tests.support.subreaper LEFTOVERS GRACE_S CMD...`` makes itself a child subreaper
(``prctl(PR_SET_CHILD_SUBREAPER)``), runs CMD with this process' standard streams, forwards
SIGTERM and SIGINT to it, and waits for it. Every process CMD started, however deep and however
orphaned, is re-parented to this one instead of to init, so once CMD has exited the processes
still running below this one are exactly the run's own leftovers: no scan of the whole machine,
where another user's ``lnq``, ``s5cmd`` or fork server would count. After up to GRACE_S seconds
for them to go (zombies are reaped as they appear), the ones still running are written to
LEFTOVERS as JSON (``[{"pid": ..., "cmdline": ...}]``), then killed; the exit status is CMD's
(128 + N when a signal N ended it).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def _descendants(root: int) -> list[int]:
    """Running (not zombie) processes below ``root``."""
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        states[int(entry)], parents[int(entry)] = fields[0], int(fields[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                frontier.append(pid)
                if states[pid] not in ("Z", "X"):
                    found.append(pid)
    return sorted(found)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    leftovers_path, grace_s, command = argv[0], float(argv[1]), argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    child = subprocess.Popen(command)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda received, _frame: child.send_signal(received))
    code = child.wait()
    deadline = time.monotonic() + grace_s
    left = _descendants(os.getpid())
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        _reap()
        left = _descendants(os.getpid())
    with open(leftovers_path, "w", encoding="utf-8") as f:
        json.dump([{"pid": pid, "cmdline": _cmdline(pid)} for pid in left], f)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.1)
    _reap()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

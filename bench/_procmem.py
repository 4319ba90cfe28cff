"""Resident memory of a whole process tree, sampled from /proc (Linux only).

A :class:`TreeSampler` thread walks ``/proc/*/stat`` every ``interval_s`` to find the root
process and all its descendants, reads each one's resident set (``/proc/PID/statm``) and,
where readable, its proportional set (``/proc/PID/smaps_rollup``, shared pages divided among
the processes that map them), and keeps the peak of the sums and the largest single process.
The RSS sum counts pages shared by forked children once per process, so it overstates what
the tree really holds; the PSS sum does not.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def parent_map() -> dict[int, int]:
    """Every visible process id mapped to its parent's id."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces
        parents[int(name)] = int(fields[1])
    return parents


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_map().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_bytes(pid: int) -> int:
    """Resident set of one process in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int | None:
    """Proportional set of one process in bytes (None when unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(w.decode(errors="replace") for w in words if w)
    return text[:120] or "?"


@dataclass
class TreePeak:
    """Peaks over the samples of one process tree."""

    rss_sum_bytes: int = 0
    pss_sum_bytes: int = 0
    single_rss_bytes: int = 0
    single_command: str = ""
    max_processes: int = 0
    samples: int = 0


class TreeSampler(threading.Thread):
    """Samples the tree under ``root`` until :meth:`stop`; the peaks are in :attr:`peak`."""

    def __init__(self, root: int, *, interval_s: float = 0.05):
        super().__init__(daemon=True)
        self.root = root
        self.interval_s = interval_s
        self.peak = TreePeak()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def sample(self) -> None:
        pids = tree_pids(self.root)
        rss = {pid: rss_bytes(pid) for pid in pids}
        pss = [pss_bytes(pid) for pid in pids]
        peak = self.peak
        peak.samples += 1
        peak.max_processes = max(peak.max_processes, len(pids))
        peak.rss_sum_bytes = max(peak.rss_sum_bytes, sum(rss.values()))
        peak.pss_sum_bytes = max(peak.pss_sum_bytes, sum(p or 0 for p in pss))
        biggest = max(rss, key=rss.__getitem__)
        if rss[biggest] > peak.single_rss_bytes:
            peak.single_rss_bytes = rss[biggest]
            peak.single_command = command_name(biggest)

    def stop(self) -> TreePeak:
        self._stop_event.set()
        self.join()
        return self.peak


def own_peak_rss_bytes() -> int:
    """This process's own peak resident set (``VmHWM``).

    Not ``getrusage().ru_maxrss``: Linux carries that across ``execve``, so a fresh benchmark
    process started by one that had just written a 556-slice phantom reports the writer's peak
    (1060 MiB whatever the child did). ``VmHWM`` belongs to the process's own address space."""
    return _own_status_bytes("VmHWM")


def own_anon_rss_bytes() -> int:
    """This process's anonymous resident memory (``RssAnon``): what it allocated, as opposed to
    pages of mapped files, which the kernel can reclaim."""
    return _own_status_bytes("RssAnon")


def _own_status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status``, in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")

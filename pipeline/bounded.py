"""Run one external command bounded in time, output and (optionally) memory, and never leave it behind.

:func:`run_bounded` starts the command in a session of its own (``start_new_session=True``), so
that it and everything it starts form one process group, and kills that whole group (SIGTERM,
then SIGKILL after a short grace) when:

- the wall-clock limit is reached (``timed_out``);
- ``progress()`` and the command's output stay unchanged for ``idle_timeout_s`` (``stalled``);
- anything interrupts the caller while it waits (an exception raised by a signal handler,
  ``KeyboardInterrupt``): the group is killed in a ``finally`` before the exception goes on;
- the command has exited but left children behind in its group.

Groups still running are listed in a registry: :func:`kill_all` (safe to call from a signal handler)
kills them all (``lnq``'s SIGINT/SIGTERM handler calls it). If the caller dies without running any
Python (SIGKILL, an ``abort()`` in a native library), the kernel sends SIGKILL to the direct child
(``PR_SET_PDEATHSIG``, Linux), because a new session is out of reach of whoever kills the caller's
own process group (as :mod:`pipeline.isolation` does). That reaches the direct child only, not its
own children: enough for s5cmd, which starts none.

The death signal and the memory limit are set between fork and exec (``preexec_fn``), with the
C function looked up beforehand and nothing else done there.

Output is kept bounded: only the last ``max_output_bytes`` of each stream, with a flag saying
that the beginning was dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

logger = logging.getLogger(__name__)

DEFAULT_GRACE_S = 2.0
"""Seconds between SIGTERM and SIGKILL when a group is stopped."""

DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024
"""Bytes of each output stream kept (its end) unless the caller asks for more."""

_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)
_POLL_S = 0.1

_LIVE: dict[int, subprocess.Popen[bytes]] = {}  # process group id -> its leader
_LIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class BoundedResult:
    """What a bounded command did: exit status (negative: killed by that signal) and its output."""

    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    stalled: bool
    seconds: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.stalled


def run_bounded(
    command: Sequence[str],
    *,
    timeout_s: float,
    memory_bytes: int | None = None,
    idle_timeout_s: float | None = None,
    progress: Callable[[], object] | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    grace_s: float = DEFAULT_GRACE_S,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> BoundedResult:
    """Run ``command`` to its end, or to ``timeout_s`` seconds, whichever comes first.

    ``memory_bytes`` limits the command's address space (``RLIMIT_AS``). With
    ``idle_timeout_s``, the command is stopped as ``stalled`` once neither its output nor the
    value of ``progress()`` (polled about ten times a second, for example the bytes written so
    far) has changed for that long. Standard input is empty. Never raises because of what the
    command does; raises ``OSError`` if it cannot be started.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    start = time.monotonic()
    deadline = start + timeout_s
    out, err = _Tail(max_output_bytes), _Tail(max_output_bytes)
    timed_out = stalled = False
    proc = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
        preexec_fn=_child_setup(memory_bytes, os.getpid()),
    )
    group = proc.pid  # a session leader's process group id is its pid
    try:
        with _LIVE_LOCK:
            _LIVE[group] = proc
        pipes = {_fileno(proc.stdout): out, _fileno(proc.stderr): err}
        timed_out, stalled = _wait(
            proc, pipes, deadline=deadline, idle_timeout_s=idle_timeout_s, progress=progress
        )
    finally:
        # every way out (normal end, limit, exception in the caller) ends the whole group
        _stop_group(group, proc, grace_s=grace_s)
        with _LIVE_LOCK:
            _LIVE.pop(group, None)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return BoundedResult(
        command=tuple(command),
        returncode=proc.returncode if proc.returncode is not None else -signal.SIGKILL,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        stalled=stalled,
        seconds=time.monotonic() - start,
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
    )


def _wait(
    proc: subprocess.Popen[bytes],
    pipes: dict[int, _Tail],
    *,
    deadline: float,
    idle_timeout_s: float | None,
    progress: Callable[[], object] | None,
) -> tuple[bool, bool]:
    """Collect output until the command ends; (timed out, stalled) if it had to be stopped."""
    with selectors.DefaultSelector() as selector:
        for fd in pipes:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        last_change = time.monotonic()
        last_progress = progress() if progress is not None else None
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                # it exited: take what it wrote, without waiting on pipes a straggler may hold
                for fd in list(pipes):
                    while (
                        fd in selector.get_map()
                        and _read(fd, pipes, selector)
                        and time.monotonic() < deadline
                    ):
                        pass
                return False, False
            if now >= deadline:
                return True, False
            if idle_timeout_s is not None:
                if progress is not None:
                    current = progress()
                    if current != last_progress:
                        last_progress, last_change = current, now
                if now - last_change >= idle_timeout_s:
                    return False, True
            if not selector.get_map():  # both pipes closed: only the exit is left to wait for
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=min(_POLL_S, deadline - now))
                continue
            for key, _ in selector.select(min(_POLL_S, deadline - now)):
                if _read(key.fd, pipes, selector):
                    last_change = time.monotonic()


def kill_all() -> None:
    """SIGKILL every live process group started by :func:`run_bounded`.

    Safe in a signal handler: takes no lock (the interrupted thread may hold it) and does not
    wait. Besides the registry, it kills the group of every child of this process that leads a
    session of its own: a signal can arrive between the start of a command and its
    registration, and a session leader among our children is what :func:`run_bounded` starts.
    The :func:`run_bounded` calls that own the groups still reap them.
    """
    for group in {*_LIVE, *_own_session_children()}:
        _killpg(group, signal.SIGKILL)


def live_groups() -> tuple[int, ...]:
    """Process group ids of the commands running now (for tests and diagnostics)."""
    return tuple(_LIVE)


class _Tail:
    """The last ``limit`` bytes of a stream, and whether anything before them was dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 0)
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _fileno(stream: IO[bytes] | None) -> int:
    if stream is None:  # never: both are pipes
        raise RuntimeError("no pipe to read")
    return stream.fileno()


def _read(fd: int, pipes: dict[int, _Tail], selector: selectors.BaseSelector) -> bool:
    """Read what is there; at end of file stop watching the pipe. True if bytes arrived."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return False
    if not chunk:
        selector.unregister(fd)
        return False
    pipes[fd].add(chunk)
    return True


def _stop_group(group: int, proc: subprocess.Popen[bytes], *, grace_s: float) -> None:
    """SIGTERM the group, SIGKILL it after ``grace_s`` if anything in it is left; reap the leader."""
    if proc.poll() is None:
        logger.debug("stopping process group %d (%s)", group, proc.args)
        _killpg(group, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    elif _group_alive(group):
        _killpg(group, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while _group_alive(group) and time.monotonic() < end:
            time.sleep(0.02)
    _killpg(group, signal.SIGKILL)  # whatever is left, leader or not
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=max(grace_s, 1.0))


def _own_session_children() -> list[int]:
    """Children of this process that lead their own session (Linux ``/proc``; else none)."""
    if not os.path.isdir("/proc"):
        return []
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if len(fields) > 3 and int(fields[1]) == me and int(fields[3]) == int(entry):
            found.append(int(entry))
    return found


def _stat_fields(pid: str) -> list[bytes]:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, session, ... (or [])."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _group_alive(group: int) -> bool:
    """True while a member of the group runs (zombies waiting for init to reap them do not count)."""
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not os.path.isdir("/proc"):
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if len(fields) > 2 and int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _killpg(group: int, number: int) -> None:
    try:
        os.killpg(group, number)
    except (ProcessLookupError, PermissionError):
        pass


def _libc_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # looked up here, not between fork and exec


def _child_setup(memory_bytes: int | None, parent_pid: int) -> Callable[[], None]:
    """What runs in the child between fork and exec: die with the parent, memory limit."""

    def setup() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before the line above
                os._exit(1)
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return setup

"""Run the part of a series that parses untrusted bytes in a child process, with limits.

DICOM from any scanner and objects from any bucket reach native decoders (pylibjpeg's
Rust RLE decoder panics, GDCM can ``abort()``, headers can claim absurd sizes). Such a
crash must end as that series' error, never as the job's. So fetching and decoding run
in a child forked from a clean, single-threaded fork server (``multiprocessing``'s
``forkserver`` start method, with the decoders preloaded so a fork costs milliseconds),
in a session of its own, with an address-space limit (``RLIMIT_AS``) and a wall-clock
limit. The parent kills the child's whole process group (s5cmd included) when the time
is up, and reports a crash by its signal, at the stage the child last announced.

The child announces each stage it enters (:class:`StageReporter`), returns a small
picklable result, and leaves large arrays in files of the series' work folder. What it sends
back is signed with a key of its own and read as data only (:mod:`pipeline.channel`): the
parent never runs code that a child, or anything else that can reach its pipe, sends.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from pipeline import channel
from pipeline.enums import Stage
from pipeline.errors import IsolatedFailure, SeriesError
from pipeline.warning_log import send_warnings_to_log

logger = logging.getLogger(__name__)

PRELOAD = [
    "numpy",
    "pydicom",
    "highdicom",
    "SimpleITK",
    "matplotlib",
    "contourpy",
    "scipy.ndimage",
    "scipy.spatial",
    "pipeline.process",
    "pipeline.inputs",
    "pipeline.series_stages",
    "pipeline.qc.picture",
    "pipeline.warmup",
]
"""Imported once in the fork server, so each child starts with them loaded."""

GIB = 1024**3


@dataclass(frozen=True)
class Limits:
    """Per-series limits on the isolated stages: wall-clock seconds and address space in bytes."""

    timeout_s: float = 1800.0
    memory_bytes: int | None = 6 * GIB


class StageReporter(Protocol):
    def __call__(self, stage: Stage) -> None: ...


_LIVE: set[int] = set()  # process groups of running children
_LIVE_LOCK = threading.Lock()
_CONTEXT: Any = None
_CONTEXT_LOCK = threading.Lock()


def _context() -> Any:
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            _CONTEXT = context
        return _CONTEXT


def start_fork_server() -> None:
    """Start the fork server now, without waiting for it: its preload (the decoders, highdicom's
    tables, matplotlib: about 1.7 s of imports) then runs beside the job's own start-up, instead
    of in front of the first series."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


def stop_fork_server() -> None:
    """Kill the fork server (when one runs) and reap it, for a process that is about to exit.

    Left alone, it notices its parent's exit and then tears down its own interpreter (0.5 s and
    more, with every preloaded library), holding the job's stdout and stderr open meanwhile: a
    caller reading them to the end waits that long after the job has finished. Its children are
    done by then (each series' child is waited for)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if not pid:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # not reaped here: multiprocessing reaps it, and starts a new
        # one should this process isolate another series after all


def kill_all() -> None:
    """Kill every running child's process group (for SIGINT/SIGTERM handlers of the job)."""
    for group in tuple(_LIVE):  # no lock: a signal handler may interrupt a thread holding it
        _kill_group(group)


def track_group(group: int) -> None:
    """Count a process group started elsewhere (the model host) among the children
    :func:`kill_all` kills."""
    with _LIVE_LOCK:
        _LIVE.add(group)


def untrack_group(group: int) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(group)


def kill_group(group: int) -> None:
    """SIGKILL a child's whole process group (gone already: nothing to do)."""
    _kill_group(group)


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent (the fork server, which goes with
    the job) dies, so that a child of a killed job does not live on (Linux; elsewhere a no-op)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_PR_SET_PDEATHSIG = 1


def _kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_isolated(
    fn: Callable[..., Any],
    *,
    series_uid: str,
    limits: Limits,
    first_stage: Stage,
    **kwargs: Any,
) -> Any:
    """``fn(report=..., **kwargs)`` in a limited child process; its return value, or
    :class:`IsolatedFailure` carrying the series' error (raised inside, crash, timeout)."""
    parent_end, child_end = _context().Pipe(duplex=False)
    key = channel.new_key()
    log_level = logging.getLogger().getEffectiveLevel()  # the child logs warnings as this process would
    process = _context().Process(
        target=_child_main,
        args=(child_end, key, fn, kwargs, limits.memory_bytes, series_uid, log_level),
        daemon=True,
    )
    process.start()
    child_end.close()
    pid = process.pid
    with _LIVE_LOCK:
        _LIVE.add(pid)
    stage = first_stage
    start = time.monotonic()
    try:
        while True:
            remaining = limits.timeout_s - (time.monotonic() - start)
            if remaining <= 0:
                _kill_group(pid)
                raise _failure(
                    series_uid,
                    stage,
                    "SeriesTimeout",
                    f"stopped after the series time limit of {limits.timeout_s:g} s (during {stage.value})",
                )
            if not parent_end.poll(min(remaining, 1.0)):
                if process.is_alive():
                    continue
                if parent_end.poll(0):  # it finished and its last message is waiting
                    continue
                break
            try:
                kind, payload = _message(channel.receive(parent_end, key))
            except (EOFError, OSError):
                break  # the child died before it could say why
            except channel.ChannelError as exc:
                raise _failure(
                    series_uid, stage, "IsolationError", f"the isolated process' channel carried {exc}"
                ) from exc
            if kind == "stage":
                stage = payload
            elif kind == "result":
                return payload
            else:
                raise IsolatedFailure(payload, series_uid=series_uid)
        process.join(5)
        raise _failure(series_uid, stage, *_death(process.exitcode, limits))
    finally:
        _kill_group(pid)  # s5cmd or any grandchild left in the child's session
        process.join(5)
        with _LIVE_LOCK:
            _LIVE.discard(pid)
        parent_end.close()


def _message(message: object) -> tuple[str, Any]:
    """``(kind, payload)`` of a message: a stage entered, the result, or the series' error."""
    if isinstance(message, tuple) and len(message) == 2:
        kind, payload = message
        if (
            (kind == "stage" and isinstance(payload, Stage))
            or (kind == "error" and isinstance(payload, SeriesError))
            or kind == "result"
        ):
            return kind, payload
    raise channel.ChannelError(f"a message of the wrong shape ({type(message).__name__})")


def _death(exitcode: int | None, limits: Limits) -> tuple[str, str]:
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else "?"
        if number == signal.SIGKILL and limits.memory_bytes:
            hint = f"; the memory limit is {limits.memory_bytes / GIB:g} GB, or the system ran out of memory"
        else:
            hint = ""
        return "DecoderCrash", f"the decoding process crashed (signal {number}, {name}){hint}"
    return "DecoderCrash", f"the decoding process exited with code {exitcode} without a result"


def _failure(series_uid: str, stage: Stage, error_type: str, message: str) -> IsolatedFailure:
    error = SeriesError(stage=stage, error_type=error_type, message=f"series {series_uid}: {message}")
    return IsolatedFailure(error, series_uid=series_uid)


def _child_main(
    conn: Connection,
    key: bytes,
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    memory_bytes: int | None,
    series_uid: str,
    log_level: int = logging.WARNING,
) -> None:
    """The child: own session (so its group can be killed whole), memory limit, library warnings
    to the log at DEBUG (not between the job's progress lines), then ``fn``."""
    os.setsid()
    send_warnings_to_log(own_handler_at=log_level)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    stage: list[Stage] = [Stage.COHORT]

    def report(current: Stage) -> None:
        stage[0] = current
        channel.send(conn, key, ("stage", current))

    try:
        result = fn(report=report, **kwargs)
    except MemoryError:
        limit = f" of {memory_bytes / GIB:g} GB" if memory_bytes else ""
        error = SeriesError(
            stage=stage[0],
            error_type="MemoryError",
            message=f"series {series_uid}: ran out of memory: exceeded the series memory limit{limit}",
        )
        channel.send(conn, key, ("error", error))
    except BaseException as exc:  # a Rust panic is a BaseException: it is this series' error too
        error = SeriesError.from_exception(exc, stage=stage[0], series_uid=series_uid)
        channel.send(conn, key, ("error", error))
    else:
        channel.send(conn, key, ("result", result))
    finally:
        conn.close()

"""Run the part of a series that parses untrusted bytes in a child process, with limits.

DICOM from any scanner and objects from any bucket reach native decoders (pylibjpeg's
Rust RLE decoder panics, GDCM can ``abort()``, headers can claim absurd sizes). Such a
crash must end as that series' error, never as the job's. So fetching and decoding run
in a child forked from a clean, single-threaded fork server (``multiprocessing``'s
``forkserver`` start method, with the decoders preloaded so a fork costs milliseconds),
in a session of its own, with an address-space limit (``RLIMIT_AS``) and a wall-clock
limit. The parent kills the child's whole process group (s5cmd included) when the time
is up, and reports a crash by its signal, at the stage the child last announced.

The child keeps a :class:`~pipeline.stage_clock.StageClock` that announces each stage it enters
and whose seconds come back with its result (a small picklable record: large arrays stay in
files of the series' work folder). What it sends
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
from typing import Any

from pipeline import channel
from pipeline.enums import Stage
from pipeline.errors import IsolatedFailure, SeriesError
from pipeline.stage_clock import StageClock
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
    clock: StageClock | None = None,
    **kwargs: Any,
) -> Any:
    """``fn(report=..., **kwargs)`` in a limited child process, starting at ``first_stage``; its
    return value, or :class:`IsolatedFailure` carrying the series' error (raised inside, crash,
    timeout). ``clock`` follows the child's stages and counts its seconds."""
    clock = clock if clock is not None else StageClock()
    clock.current = first_stage
    parent_end, child_end = _context().Pipe(duplex=False)
    key = channel.new_key()
    log_level = logging.getLogger().getEffectiveLevel()  # the child logs warnings as this process would
    process = _context().Process(
        target=_child_main,
        args=(child_end, key, fn, kwargs, limits.memory_bytes, series_uid, first_stage, log_level),
        daemon=True,
    )
    process.start()
    child_end.close()
    pid = process.pid
    with _LIVE_LOCK:
        _LIVE.add(pid)
    start = time.monotonic()
    try:
        while True:
            remaining = limits.timeout_s - (time.monotonic() - start)
            if remaining <= 0:
                _kill_group(pid)
                during = clock.current
                raise _failure(
                    series_uid,
                    during,
                    "SeriesTimeout",
                    f"stopped after the series time limit of {limits.timeout_s:g} s (during {during.value})",
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
                    series_uid,
                    clock.current,
                    "IsolationError",
                    f"the isolated process' channel carried {exc}",
                ) from exc
            if kind == "stage":
                clock.current = payload
            elif kind == "result":
                result, seconds = payload
                clock.merge(seconds)
                return result
            else:
                raise IsolatedFailure(payload, series_uid=series_uid)
        process.join(5)
        raise _failure(series_uid, clock.current, *_death(process.exitcode, limits, clock.current))
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
            or (kind == "result" and _is_result(payload))
        ):
            return kind, payload
    raise channel.ChannelError(f"a message of the wrong shape ({type(message).__name__})")


def _is_result(payload: object) -> bool:
    """``(the value, {stage: seconds})``."""
    if not (isinstance(payload, tuple) and len(payload) == 2 and isinstance(payload[1], dict)):
        return False
    return all(isinstance(k, Stage) and isinstance(v, float) for k, v in payload[1].items())


def _death(exitcode: int | None, limits: Limits, stage: Stage) -> tuple[str, str]:
    """The error of a child that ended without a word, named by the stage it was in (fetching and
    decoding run native decoders; measuring, SEG writing and the QC picture run others)."""
    decoding = stage in _DECODING
    kind, doing = ("DecoderCrash", "decoding") if decoding else ("ProcessCrash", stage.value)
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else "?"
        if number == signal.SIGKILL and limits.memory_bytes:
            hint = f"; the memory limit is {limits.memory_bytes / GIB:g} GB, or the system ran out of memory"
        else:
            hint = ""
        return kind, f"the {doing} process crashed (signal {number}, {name}){hint}"
    return kind, f"the {doing} process exited with code {exitcode} without a result"


_DECODING = frozenset({Stage.COHORT, Stage.FETCH, Stage.DECODE, Stage.REFERENCE})


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
    first_stage: Stage,
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
    clock = StageClock(first_stage, announce=lambda stage: channel.send(conn, key, ("stage", stage)))
    clock.start()
    try:
        result = fn(report=clock, **kwargs)
        clock.stop()
    except MemoryError:
        limit = f" of {memory_bytes / GIB:g} GB" if memory_bytes else ""
        error = SeriesError(
            stage=clock.current,
            error_type="MemoryError",
            message=f"series {series_uid}: ran out of memory: exceeded the series memory limit{limit}",
        )
        channel.send(conn, key, ("error", error))
    except BaseException as exc:  # a Rust panic is a BaseException: it is this series' error too
        error = SeriesError.from_exception(exc, stage=clock.current, series_uid=series_uid)
        channel.send(conn, key, ("error", error))
    else:
        channel.send(conn, key, ("result", (result, clock.seconds)))
    finally:
        conn.close()

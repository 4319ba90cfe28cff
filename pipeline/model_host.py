"""The model in a process of its own, held to the series' time and memory limits.

A model is code the user brought: one series can make its forward pass never return (and hold
the model's lock, stalling every other series), or make its memory explode (and get the whole
worker killed by the kernel). So the model is loaded once per worker in a long-lived *model
host*: a child forked from the isolation fork server (:mod:`pipeline.isolation`), in a session
of its own, that serves the worker's threads as the worker's own model did: one thread per
series, the windows of several series interleaved under the model's lock (the streamed windows
of :mod:`pipeline.models.windows`), each series' CT mapped from the ``.npy`` its decoding child
wrote and its prediction written to the ``.npy`` its measuring child reads, so no array crosses
between processes.

The worker (:class:`ModelHost`) watches every request:

- **time**: a request that has run for ``--series-timeout`` is that series' ``SeriesTimeout`` at
  ``inference``; the host is killed (its forward pass may hold the lock forever) and started
  again for the next request. A request is not charged for the time it waits for the model's
  lock while another series' forward pass holds it: the host counts those waits and reports them
  every :data:`REPORT_INTERVAL_S`, so a forward pass that never returns is charged to its own
  series, not to the series queued behind it;
- **memory**: the host's resident memory is sampled every :data:`WATCH_INTERVAL_S`; above what it
  held once the model was loaded plus ``--series-memory-gb`` per series in flight, it is killed.
  No address-space limit (CUDA reserves far more address space than it uses), and the host is the
  kernel's first choice should memory run out anyway (``oom_score_adj`` 1000), not the worker;
- **crash**: a host that dies (a native crash, the kernel's OOM killer) is noticed at once.

Who is to blame: a timed-out request is; the other requests in flight are innocent and are
retried once on the new host (with a fresh time limit). After a memory kill or a crash any
request in flight may be the cause, so each is retried once *alone* (no other request in the
host meanwhile): the one that blows it up alone is that series' ``MemoryError`` (or
``ModelCrash``); a request that was alone in the first place is to blame at once. What the
host sends back is signed and read as data (:mod:`pipeline.channel`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import channel, isolation
from pipeline.enums import Stage
from pipeline.errors import IsolatedFailure, ModelError, SeriesError
from pipeline.geometry import CtVolume
from pipeline.models.base import SavedPrediction, check_finite

if TYPE_CHECKING:
    from pipeline.models.base import SegmentationModel
    from pipeline.models.spec import ModelSpec

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.05
"""How often the worker checks the host's deadlines and memory."""
REPORT_INTERVAL_S = 0.25
"""How often the host reports how long each request has waited for the model's lock."""
LOAD_TIMEOUT_S = 1800.0
"""The longest a host may take to load its model (a first CUDA start and a large checkpoint take
tens of seconds)."""
GIB = 1024**3
MAX_REQUESTS = 64
"""Requests a host runs at once (a worker sends as many as it has series in flight)."""


@dataclass(frozen=True)
class InferenceRequest:
    """One series for the host: its CT without voxels (they are in ``hu_path``) and where to put
    the prediction."""

    request_id: int
    ct: CtVolume
    hu_path: str
    save_to: str


@dataclass(frozen=True)
class InferenceDone:
    """A series' prediction, left in ``prediction.path``, and the seconds the model spent on it."""

    request_id: int
    prediction: SavedPrediction
    inference_s: float
    postprocess_s: float


def predict_to_file(
    model: SegmentationModel, ct: CtVolume, path: str, *, request_id: int = 0
) -> InferenceDone:
    """Run ``model`` on ``ct`` and leave its answer in ``path`` for the measuring child: a mask on
    the CT grid, or probabilities on the model's grid, checked for shape and for NaN/infinity."""
    predicted = model.predict(ct, save_to=path)
    if predicted.mask is not None:
        shape, expected, what = predicted.mask.shape, ct.hu.shape, "a mask"
    else:
        assert predicted.probabilities is not None and predicted.grid is not None
        shape, expected, what = predicted.probabilities.shape, predicted.grid.size_zyx, "probabilities"
    if tuple(shape) != tuple(expected):
        raise ModelError(
            f"model {model.name} returned {what} of shape {tuple(shape)} "
            f"for a grid of shape {tuple(expected)} [z, y, x]",
            series_uid=ct.series_uid or None,
        )
    if predicted.saved_to is None:  # a model that writes its output checks it as it writes it
        output = predicted.mask if predicted.mask is not None else predicted.probabilities
        check_finite(output, what=what.removeprefix("a "), series_uid=ct.series_uid or None)
    saved = SavedPrediction.save(predicted, path)
    # the model times its own steps: its resampling back to the CT grid is post-processing
    return InferenceDone(request_id, saved, predicted.inference_s, predicted.postprocess_s)


# ---- the worker's side ------------------------------------------------------------------------


class _Attempt:
    """One request in a host, and how it ended."""

    def __init__(self, request_id: int, *, timeout_s: float, memory_bytes: int | None, solo: bool):
        self.request_id = request_id
        self.started = time.monotonic()
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.solo = solo
        self.done = threading.Event()
        self.result: InferenceDone | None = None
        self.error: SeriesError | None = None
        self.fate: str | None = None
        """When the host went while it ran: ``timeout`` (its own deadline), ``innocent`` (another
        request's deadline), ``suspect`` (memory or a crash, cause unknown), ``culprit`` (memory or
        a crash while it was alone)."""
        self.reason = ""
        self.kind = ""


class _Host:
    """One host process: its connection, its requests in flight, what it held once loaded."""

    def __init__(self, process: Any, conn: Connection, key: bytes):
        self.process, self.conn, self.key = process, conn, key
        self.pid: int = process.pid
        self.attempts: dict[int, _Attempt] = {}
        self.send_lock = threading.Lock()
        self.dead = False
        self.baseline_bytes = 0
        self.name = self.version = ""
        self.waited: dict[int, float] = {}
        """Seconds each request has waited for the model's lock, as the host last reported."""


class ModelHost:
    """The worker's handle on its model host; :meth:`predict` is safe to call from many threads."""

    def __init__(self, spec: ModelSpec, *, load_timeout_s: float = LOAD_TIMEOUT_S):
        self.spec = spec
        self.load_timeout_s = load_timeout_s
        self.starts = 0
        """Host processes started (the model is loaded once in each)."""
        self._state = threading.Condition()
        self._start_lock = threading.Lock()
        self._host: _Host | None = None
        self._ids = itertools.count(1)
        self._solo = False
        self._shared = 0
        self._closed = False
        host = self._live()  # load now: a model that cannot be loaded fails here, before any series
        self.name, self.version = host.name, host.version
        # the threads hold the handle weakly: when Beam's Shared lets go of it, it is collected and
        # its host stopped (``__del__``)
        watchdog = threading.Thread(
            target=_watch, args=(weakref.ref(self),), name="model-host-watch", daemon=True
        )
        watchdog.start()

    # -- requests

    def predict(
        self, ct: CtVolume, *, hu_path: str, save_to: str, timeout_s: float, memory_bytes: int | None
    ) -> InferenceDone:
        """The prediction for ``ct`` (voxels in ``hu_path``), written to ``save_to``; an
        :class:`IsolatedFailure` with the series' ``inference`` error otherwise."""
        uid = ct.series_uid
        attempt = self._attempt(ct, hu_path, save_to, timeout_s, memory_bytes, solo=False)
        if attempt.fate in ("innocent", "suspect"):
            logger.warning(
                "series %s: the model process was stopped while it ran (%s); trying once more%s",
                uid,
                attempt.reason,
                " on its own" if attempt.fate == "suspect" else "",
            )
            first = attempt
            attempt = self._attempt(
                ct, hu_path, save_to, timeout_s, memory_bytes, solo=attempt.fate == "suspect"
            )
            if attempt.fate == "suspect":  # alone in the host this time: it is the cause
                attempt.fate = "culprit"
            elif attempt.fate == "innocent":
                attempt.fate, attempt.kind = "culprit", "ModelHostError"
                attempt.reason = f"{first.reason}; then {attempt.reason}"
        if attempt.result is not None:
            return attempt.result
        if attempt.error is not None:
            raise IsolatedFailure(attempt.error, series_uid=uid)
        if attempt.fate == "timeout":
            message = (
                f"series {uid}: stopped after the series time limit of {timeout_s:g} s (during inference); "
                "the model process was stopped and is started again for the next series"
            )
            error = SeriesError(stage=Stage.INFERENCE, error_type="SeriesTimeout", message=message)
        else:
            error = SeriesError(
                stage=Stage.INFERENCE,
                error_type=attempt.kind or "ModelCrash",
                message=f"series {uid}: {attempt.reason}",
            )
        raise IsolatedFailure(error, series_uid=uid)

    def _attempt(
        self,
        ct: CtVolume,
        hu_path: str,
        save_to: str,
        timeout_s: float,
        memory_bytes: int | None,
        *,
        solo: bool,
    ) -> _Attempt:
        self._enter(solo)
        try:
            try:
                host = self._live()
            except ModelError as exc:
                attempt = _Attempt(0, timeout_s=0.0, memory_bytes=None, solo=solo)
                attempt.error = SeriesError.from_exception(
                    exc, stage=Stage.INFERENCE, series_uid=ct.series_uid
                )
                return attempt
            attempt = _Attempt(next(self._ids), timeout_s=timeout_s, memory_bytes=memory_bytes, solo=solo)
            with self._state:
                if host.dead:  # gone between _live() and here: try the next one
                    attempt.fate, attempt.reason = "innocent", "the model process had just stopped"
                    return attempt
                host.attempts[attempt.request_id] = attempt
            request = InferenceRequest(
                attempt.request_id, dataclasses.replace(ct, hu=_NO_PIXELS, headers=()), hu_path, save_to
            )
            try:
                with host.send_lock:
                    channel.send(host.conn, host.key, ("predict", request))
            except OSError:  # the host had died before this request reached it: not this one's doing
                with self._state:
                    host.attempts.pop(attempt.request_id, None)
                attempt.fate, attempt.reason = "innocent", "the model process had stopped"
                host.process.join(1.0)
                reason = f"the model process died ({_death(host.process)})"
                self._stop(host, culprit=None, reason=reason, kind=_death_kind(host.process))
                return attempt
            attempt.done.wait()  # the watchdog or the reader settles it, whatever happens to the host
            return attempt
        finally:
            self._leave(solo)

    def _enter(self, solo: bool) -> None:
        """A retry alone waits until no other request is in the host; others wait for it."""
        with self._state:
            while self._solo:
                self._state.wait()
            if solo:
                self._solo = True
                while self._shared:
                    self._state.wait()
            else:
                self._shared += 1

    def _leave(self, solo: bool) -> None:
        with self._state:
            if solo:
                self._solo = False
            else:
                self._shared -= 1
            self._state.notify_all()

    # -- the host process

    def _live(self) -> _Host:
        """The running host, started (model loaded) if there is none."""
        with self._start_lock:
            host = self._host
            if host is not None and not host.dead:
                return host
            if self._closed:
                raise ModelError("the model host was closed")
            host = self._spawn()
            with self._state:
                self._host = host
            return host

    def _spawn(self) -> _Host:
        context = isolation._context()
        parent_end, child_end = context.Pipe(duplex=True)
        key = channel.new_key()
        process = context.Process(target=_serve, args=(child_end, key, self.spec), daemon=True)
        process.start()
        child_end.close()
        isolation.track_group(process.pid)
        host = _Host(process, parent_end, key)
        self.starts += 1
        try:
            if not parent_end.poll(self.load_timeout_s):
                raise ModelError(
                    f"model {self.spec.label}: loading took longer than {self.load_timeout_s:g} s"
                )
            kind, payload = channel.receive(parent_end, key)
            if kind == "failed" and isinstance(payload, str):
                raise ModelError(payload)
            if kind != "ready" or not (isinstance(payload, tuple) and len(payload) == 2):
                raise ModelError(f"model {self.spec.label}: the model process answered {kind!r}")
        except (EOFError, OSError, channel.ChannelError) as exc:
            self._reap(host)
            raise ModelError(
                f"model {self.spec.label}: the model process died while loading it ({_death(process)})"
            ) from exc
        except ModelError:
            self._reap(host)
            raise
        host.name, host.version = str(payload[0]), str(payload[1])
        host.baseline_bytes = _rss_bytes(host.pid)
        reader = threading.Thread(
            target=_read, args=(weakref.ref(self), host), name="model-host-read", daemon=True
        )
        reader.start()
        logger.info(
            "model %s loaded in process %d (%.0f MiB)", self.spec.label, host.pid, host.baseline_bytes / 2**20
        )
        return host

    def _answered(self, host: _Host, kind: str, payload: object) -> None:
        """Hand an answer of ``host`` to the request waiting for it."""
        with self._state:
            if kind == "waited" and isinstance(payload, dict):
                host.waited = {int(k): float(v) for k, v in payload.items()}
            elif kind == "done" and isinstance(payload, InferenceDone):
                attempt = host.attempts.pop(payload.request_id, None)
                if attempt is not None:
                    attempt.result = payload
                    attempt.done.set()
            elif kind == "error" and isinstance(payload, tuple) and len(payload) == 2:
                request_id, error = payload
                attempt = host.attempts.pop(request_id, None)
                if attempt is not None and isinstance(error, SeriesError):
                    attempt.error = error
                    attempt.done.set()

    def _check(self) -> None:
        """Stop the host when a request passes its deadline or the host its memory."""
        with self._state:
            host = self._host
            attempts = list(host.attempts.values()) if host is not None and not host.dead else []
        if not attempts or host is None:
            return
        now = time.monotonic()
        waited = host.waited
        # a request's own time: what it has run, less what it waited for another's forward pass
        late = [a for a in attempts if now - a.started - waited.get(a.request_id, 0.0) >= a.timeout_s]
        if late:
            self._stop(host, culprit=late[0].request_id, reason="", kind="SeriesTimeout", timed_out=True)
            return
        limits = [a.memory_bytes for a in attempts if a.memory_bytes is not None]
        if len(limits) < len(attempts):  # a series without a memory limit: none for the host
            return
        allowed = host.baseline_bytes + sum(limits)
        held = _rss_bytes(host.pid)
        if held > allowed:
            reason = (
                f"ran out of memory: the model process held {held / GIB:.2f} GB, over its limit of "
                f"{allowed / GIB:.2f} GB ({host.baseline_bytes / GIB:.2f} GB with the model loaded, plus "
                f"the series memory limit of {limits[0] / GIB:g} GB for each of the {len(limits)} series "
                "in it)"
            )
            self._stop(host, culprit=None, reason=reason, kind="MemoryError")

    def _stop(
        self, host: _Host, *, culprit: int | None, reason: str, kind: str, timed_out: bool = False
    ) -> None:
        """Kill ``host`` and settle every request in it: the culprit (a timeout), innocents
        (another's timeout), or suspects (memory, crash; to blame when they were alone)."""
        with self._state:
            if host.dead:
                return
            host.dead = True
            attempts = list(host.attempts.values())
            host.attempts.clear()
            for attempt in attempts:
                attempt.kind = kind
                if timed_out and attempt.request_id == culprit:
                    attempt.fate = "timeout"
                elif timed_out:
                    attempt.fate = "innocent"
                    attempt.reason = "another series in it passed its time limit"
                else:
                    attempt.fate = "culprit" if len(attempts) == 1 or attempt.solo else "suspect"
                    attempt.reason = reason
            self._state.notify_all()
        self._reap(host)
        for attempt in attempts:
            attempt.done.set()
        if not self._closed:
            logger.warning(
                "model process %d stopped: %s", host.pid, reason or "a series passed its time limit"
            )

    def _reap(self, host: _Host) -> None:
        host.dead = True
        isolation.kill_group(host.pid)
        host.process.join(5)
        isolation.untrack_group(host.pid)
        with contextlib.suppress(OSError):
            host.conn.close()

    def close(self) -> None:
        """Stop the host (the worker is done with the model)."""
        self._closed = True
        with self._start_lock:
            host = self._host
        if host is not None:
            self._stop(host, culprit=None, reason="the model host was closed", kind="ModelHostError")

    def __del__(self) -> None:  # Beam's Shared drops the handle when no DoFn holds it
        try:
            self.close()
        except BaseException:  # noqa: S110  (at interpreter exit the modules may be gone already)
            pass


def open_model(spec: ModelSpec) -> ModelHost:
    """The model of ``spec`` loaded in a host process of its own (a :class:`ModelError` when it
    cannot be loaded)."""
    return ModelHost(spec)


_NO_PIXELS = np.empty((0, 0, 0), dtype=np.int16)


def _watch(handle: weakref.ref[ModelHost]) -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        host = handle()
        if host is None or host._closed:
            return
        host._check()
        del host


def _read(handle: weakref.ref[ModelHost], host: _Host) -> None:
    """Hand each answer of ``host`` to the request waiting for it; notice the host's end."""
    while True:
        try:
            kind, payload = channel.receive(host.conn, host.key)
        except (EOFError, OSError, channel.ChannelError, TypeError, ValueError) as exc:
            owner = handle()
            if owner is not None and not host.dead:
                host.process.join(1.0)
                reason = f"the model process died ({_death(host.process)})"
                if isinstance(exc, channel.ChannelError):
                    reason = f"the model process sent {exc}"
                owner._stop(host, culprit=None, reason=reason, kind=_death_kind(host.process))
            return
        owner = handle()
        if owner is None:
            return
        owner._answered(host, kind, payload)
        del owner


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _death(process: Any) -> str:
    code = process.exitcode
    if code is None:
        return "still running"
    if code < 0:
        number = -code
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else "?"
        hint = ": the system may have run out of memory" if number == signal.SIGKILL else ""
        return f"signal {number}, {name}{hint}"
    return f"exit code {code}"


def _death_kind(process: Any) -> str:
    return "MemoryError" if process.exitcode == -signal.SIGKILL else "ModelCrash"


# ---- the host's side --------------------------------------------------------------------------


def _serve(conn: Connection, key: bytes, spec: ModelSpec) -> None:
    """The host: its own session, killed with its parent, the kernel's first choice when memory
    runs out; loads the model once, then runs each request in a thread of its own."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    isolation.die_with_parent()
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
        f.write("1000")
    from pipeline.models.spec import load_model

    try:
        model = load_model(spec)
    except BaseException as exc:  # a model that cannot be loaded: say why, and stop
        message = str(exc) if isinstance(exc, ModelError) else f"model {spec.label} cannot be loaded: {exc!r}"
        channel.send(conn, key, ("failed", message))
        return
    send_lock = threading.Lock()

    def reply(message: object) -> None:
        with send_lock:
            channel.send(conn, key, message)

    lock = getattr(model, "forward_lock", None)
    accounted = _AccountedLock(lock) if lock is not None else None
    if accounted is not None:
        model.forward_lock = accounted  # type: ignore[attr-defined]
        reporter = threading.Thread(target=_report_waits, args=(accounted, reply), daemon=True)
        reporter.start()
    channel.send(conn, key, ("ready", (str(model.name), str(model.version))))
    # long-lived request threads, reused from one series to the next (as the worker's own threads
    # were): torch's OpenMP keeps a team of threads for each thread that calls it
    pool = ThreadPoolExecutor(max_workers=MAX_REQUESTS, thread_name_prefix="model-request")
    while True:
        try:
            kind, request = channel.receive(conn, key)
        except (EOFError, OSError):
            os._exit(0)  # the worker is gone
        if kind == "predict" and isinstance(request, InferenceRequest):
            pool.submit(_answer, model, request, reply, accounted)


class _AccountedLock:
    """The model's forward lock, counting how long each request's thread waits to take it."""

    def __init__(self, inner: Any):
        self._inner = inner
        self._guard = threading.Lock()
        self._waited: dict[int, float] = {}
        self._since: dict[int, float] = {}
        self.current = threading.local()

    def __enter__(self) -> _AccountedLock:
        request_id = getattr(self.current, "request_id", None)
        if request_id is None:
            self._inner.__enter__()
            return self
        start = time.monotonic()
        with self._guard:
            self._since[request_id] = start
        try:
            self._inner.__enter__()
        finally:
            with self._guard:
                self._since.pop(request_id, None)
                self._waited[request_id] = self._waited.get(request_id, 0.0) + time.monotonic() - start
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)

    def report(self) -> dict[int, float]:
        """Seconds each active request has waited, its ongoing wait included."""
        now = time.monotonic()
        with self._guard:
            waited = dict(self._waited)
            for request_id, since in self._since.items():
                waited[request_id] = waited.get(request_id, 0.0) + now - since
        return waited

    def forget(self, request_id: int) -> None:
        with self._guard:
            self._waited.pop(request_id, None)
            self._since.pop(request_id, None)


def _report_waits(lock: _AccountedLock, reply: Callable[[object], None]) -> None:
    while True:
        time.sleep(REPORT_INTERVAL_S)
        waited = lock.report()
        if waited:
            reply(("waited", waited))


def _answer(
    model: SegmentationModel,
    request: InferenceRequest,
    reply: Callable[[object], None],
    lock: _AccountedLock | None,
) -> None:
    uid = request.ct.series_uid
    if lock is not None:
        lock.current.request_id = request.request_id
    try:
        ct = dataclasses.replace(request.ct, hu=np.load(request.hu_path, mmap_mode="c"))
        done = predict_to_file(model, ct, request.save_to, request_id=request.request_id)
    except MemoryError:
        error = SeriesError(
            stage=Stage.INFERENCE,
            error_type="MemoryError",
            message=f"series {uid}: the model ran out of memory",
        )
        reply(("error", (request.request_id, error)))
    except BaseException as exc:  # this series' error; the host serves the others on
        reply(
            (
                "error",
                (request.request_id, SeriesError.from_exception(exc, stage=Stage.INFERENCE, series_uid=uid)),
            )
        )
    else:
        reply(("done", done))
    finally:
        if lock is not None:
            lock.forget(request.request_id)

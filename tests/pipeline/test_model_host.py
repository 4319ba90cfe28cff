"""Attacks on the model host: a forward pass that never returns, a memory explosion, a host killed
from outside. Each is that series' ``inference`` row; the series beside it finish; the model is
loaded once per host, and the host again only after it was stopped."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import List  # noqa: UP035  (TorchScript reads List[Tensor])

import numpy as np
import pydicom
import pytest
import torch

from pipeline import isolation
from pipeline.errors import ModelError
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.isolation import GIB, Limits
from pipeline.model_host import ModelHost
from pipeline.models.spec import parse_model_spec
from pipeline.outputs.rows import OutcomeRows, outcome_rows
from pipeline.process import ProcessConfig, process_series
from tests.support.cohort import cohort_row
from tests.support.models import save_torchscript
from tests.support.phantoms import Phantom, make_phantom

BRIGHT_HU = 3000


class HangsOnBright(torch.nn.Module):
    """A HU window, except on a series with metal (> 2500 HU): there its forward pass never returns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.max() > 2500.0):
            y = x
            while bool(y.sum() > -1e38):  # never false
                y = y * 1.0
            return y
        return 4.0 * (70.0 - torch.abs(x - 40.0))


class BalloonsOnBright(torch.nn.Module):
    """A HU window, except on a series with metal: there it takes 64 MB after 64 MB (up to 5 GB)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.max() > 2500.0):
            hoard: List[torch.Tensor] = []  # noqa: UP006  (TorchScript's spelling)
            for i in range(80):
                hoard.append(torch.full([16 * 1024 * 1024], float(i)))
            total = torch.zeros(1)
            for block in hoard:  # every block is read: none can be left out
                total = total + block[-1]
            return x * 0.0 + total
        return 4.0 * (70.0 - torch.abs(x - 40.0))


class Slowly(torch.nn.Module):
    """``inner``, after some busy work per window batch: the series beside it stays in the host
    long enough to be there when the other one misbehaves."""

    def __init__(self, inner: torch.nn.Module, work: int = 60):
        super().__init__()
        self.inner = inner
        self.work = work

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        busy = torch.ones(1_000_000)
        for _ in range(self.work):  # 60: about 0.1 s of work on one core
            busy = torch.sin(busy) + busy
        return self.inner(x) + 0.0 * busy[0]


def _with_metal(phantom: Phantom) -> Phantom:
    """The phantom with a few voxels of metal in one slice (rewritten in place)."""
    path = sorted(phantom.ct_dir.iterdir())[len(list(phantom.ct_dir.iterdir())) // 2]
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.copy()
    pixels[5:8, 5:8] = BRIGHT_HU  # signed, slope 1, intercept 0: stored value = HU
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    return phantom


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Phantom]:
    base = tmp_path_factory.mktemp("host")
    shape = (12, 64, 64)
    healthy = make_phantom(base / "healthy", seed=81, noise_sd=0.0, anatomy=False, shape_zyx=shape)
    metal = _with_metal(make_phantom(base / "metal", seed=82, noise_sd=0.0, anatomy=False, shape_zyx=shape))
    return {"healthy": healthy, "metal": metal}


def _spec(tmp_path: Path, module: torch.nn.Module):  # type: ignore[no-untyped-def]
    path = save_torchscript(module, tmp_path / f"{type(module).__name__}.pt", patch_size=(8, 32, 32))
    return parse_model_spec(f"torchscript:{path}", device="cpu")


def _config(spec, *, timeout_s: float = 60.0, memory_gb: float | None = 2.0) -> ProcessConfig:  # type: ignore[no-untyped-def]
    memory = None if memory_gb is None else int(memory_gb * GIB)
    return ProcessConfig(
        fetch=FetchConfig(endpoint_url="http://127.0.0.1:9", attempts=1),
        model=spec,
        limits=Limits(timeout_s=timeout_s, memory_bytes=memory),
    )


def _row(phantom: Phantom) -> dict:
    return cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))


def _in_threads(run: Callable[[int], None], n: int, *, gap_s: float) -> None:
    """``run(i)`` for each of ``n`` items in a thread of its own, started ``gap_s`` apart, as a
    worker's threads take series; waits for all."""
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
        time.sleep(gap_s)
    for thread in threads:
        thread.join(300)


def _at_once(
    host: ModelHost, config: ProcessConfig, phantoms: list[Phantom], *, gap_s: float = 0.5
) -> list[OutcomeRows]:
    """Process the phantoms in threads of their own, as a worker's threads do, ``gap_s`` apart."""
    results: list[OutcomeRows | None] = [None] * len(phantoms)

    def run(i: int) -> None:
        results[i] = outcome_rows(process_series(_row(phantoms[i]), config=config, model=host))

    _in_threads(run, len(phantoms), gap_s=gap_s)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _error(rows: OutcomeRows) -> tuple[str, str, str]:
    ((stage, kind, message),) = [(e["stage"], e["error_type"], e["message"]) for e in rows.errors]
    return stage, kind, message


@pytest.mark.slow
def test_a_forward_pass_that_never_returns_is_a_timeout_and_the_series_beside_it_finishes(
    series: dict[str, Phantom], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = _spec(tmp_path, HangsOnBright())
    host = ModelHost(spec)
    caplog.set_level(logging.WARNING, logger="pipeline.model_host")
    try:
        start = time.monotonic()
        # the hostile series first: its forward pass holds the model's lock when the healthy one
        # comes for it; a limit well above what the healthy series needs on a loaded 2-core
        # machine (about 1 s alone)
        config = _config(spec, timeout_s=20.0)
        metal, healthy = _at_once(host, config, [series["metal"], series["healthy"]], gap_s=4.0)
        took = time.monotonic() - start
        stage, kind, message = _error(metal)
        assert (stage, kind) == ("inference", "SeriesTimeout") and series["metal"].series_uid in message
        assert "time limit of 20 s (during inference)" in message
        assert healthy.series["status"] == "ok", healthy.errors
        assert healthy.series["n_prediction_nodes"] == healthy.series["n_reference_nodes"] > 0
        innocent = f"series {series['healthy'].series_uid}: the model process was stopped while it ran"
        assert innocent in caplog.text and "another series in it passed its time limit" in caplog.text
        assert host.starts == 2  # stopped once, for the hung series, and started again for the retry
        assert took < 120
        again = outcome_rows(process_series(_row(series["healthy"]), config=_config(spec), model=host))
        assert again.series["status"] == "ok" and host.starts == 2  # the new host serves on
    finally:
        host.close()


def _predict_at_once(
    host: ModelHost,
    phantoms: list[Phantom],
    folder: Path,
    *,
    memory_gb: float,
    gap_s: float = 0.5,
    timeout_s: float = 120.0,
) -> list[object]:
    """Call the host for each phantom in a thread of its own, as the worker's threads do (the CT
    decoded here and left in a ``.npy``, as the decoding child leaves it): each result or error."""
    from pipeline.dicom.ct import decode_ct_series
    from pipeline.errors import IsolatedFailure

    outcomes: list[object] = [None] * len(phantoms)

    def run(i: int) -> None:
        ct = decode_ct_series(str(phantoms[i].ct_dir))
        hu_path = folder / f"hu{i}.npy"
        np.save(hu_path, ct.hu)
        try:
            outcomes[i] = host.predict(
                ct,
                hu_path=str(hu_path),
                save_to=str(folder / f"p{i}.npy"),
                timeout_s=timeout_s,
                memory_bytes=int(memory_gb * GIB),
            )
        except IsolatedFailure as exc:
            outcomes[i] = exc.error

    _in_threads(run, len(phantoms), gap_s=gap_s)
    return outcomes


@pytest.mark.slow
def test_waiting_for_a_hung_forward_pass_is_not_charged_to_the_series_that_waits(
    series: dict[str, Phantom], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The healthy series starts first, so by the wall clock it would reach its limit first while
    it waits for the lock the hung forward pass holds: its waiting is not its own time, the hung
    series' is."""
    from pipeline.errors import SeriesError
    from pipeline.model_host import InferenceDone

    # about 5 s a series alone on a quiet 2-core machine, four times that on a busy one
    host = ModelHost(_spec(tmp_path, Slowly(HangsOnBright(), work=600)))
    caplog.set_level(logging.WARNING, logger="pipeline.model_host")
    try:
        healthy, metal = _predict_at_once(
            host, [series["healthy"], series["metal"]], tmp_path, memory_gb=2.0, gap_s=1.0, timeout_s=45.0
        )
        assert isinstance(metal, SeriesError), metal
        assert metal.error_type == "SeriesTimeout" and series["metal"].series_uid in metal.message
        assert isinstance(healthy, InferenceDone), healthy
        innocent = f"series {series['healthy'].series_uid}: the model process was stopped while it ran"
        assert innocent in caplog.text  # it was in the host, waiting, when the hung series was stopped
    finally:
        host.close()


@pytest.mark.slow
def test_a_memory_explosion_is_a_memory_error_and_the_series_beside_it_finishes(
    series: dict[str, Phantom], tmp_path: Path
) -> None:
    """A memory limit small enough for this shared machine: 0.3 GB per series in the host (the
    job's default is --series-memory-gb 6, which the decoding children share as their address
    space limit; here the host is called directly, as ``process_series`` calls it)."""
    from pipeline.errors import SeriesError
    from pipeline.model_host import InferenceDone

    host = ModelHost(_spec(tmp_path, Slowly(BalloonsOnBright(), work=600)))  # the healthy one stays a while
    try:
        healthy, metal = _predict_at_once(host, [series["healthy"], series["metal"]], tmp_path, memory_gb=0.3)
        assert isinstance(metal, SeriesError), metal
        assert (metal.stage.value, metal.error_type) == ("inference", "MemoryError")
        assert series["metal"].series_uid in metal.message and "the model process held" in metal.message
        assert "the series memory limit of 0.3 GB for each of the" in metal.message
        assert isinstance(healthy, InferenceDone), healthy  # retried alone, after the stop
        assert 2 <= host.starts <= 3  # stopped with both in it, then each alone: the hostile one again
    finally:
        host.close()


@pytest.mark.slow
def test_a_host_killed_from_outside_while_alone_blames_its_series_and_serves_the_next(
    series: dict[str, Phantom], tmp_path: Path
) -> None:
    """The kernel's OOM killer (the host is its first choice) looks like this: a SIGKILL."""
    from tests.support.models import HuWindow

    spec = _spec(tmp_path, Slowly(HuWindow(40.0, 70.0), work=600))
    host = ModelHost(spec)
    try:
        serving = host._host  # type: ignore[union-attr]

        def kill_soon() -> None:  # once the series is in the host
            while not serving.attempts:
                time.sleep(0.02)
            time.sleep(0.5)
            os.kill(serving.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        rows = outcome_rows(process_series(_row(series["healthy"]), config=_config(spec), model=host))
        killer.join()
        stage, kind, message = _error(rows)
        assert (stage, kind) == ("inference", "MemoryError")
        assert "signal 9, SIGKILL: the system may have run out of memory" in message
        later = outcome_rows(process_series(_row(series["healthy"]), config=_config(spec), model=host))
        assert later.series["status"] == "ok" and host.starts == 2
    finally:
        host.close()


@pytest.mark.slow
def test_one_host_serves_every_series_and_its_limits_are_cuda_compatible(
    series: dict[str, Phantom], tmp_path: Path
) -> None:
    from tests.support.models import HuWindow

    spec = _spec(tmp_path, HuWindow(40.0, 70.0))
    host = ModelHost(spec)
    try:
        results = _at_once(host, _config(spec), [series["healthy"], series["healthy"], series["metal"]])
        assert [r.series["status"] for r in results] == ["ok", "ok", "ok"]
        assert host.starts == 1  # the model was loaded once for all of them
        pid = host._host.pid  # type: ignore[union-attr]
        limits = Path(f"/proc/{pid}/limits").read_text()
        (address_space,) = [line for line in limits.splitlines() if line.startswith("Max address space")]
        assert address_space.split()[3] == "unlimited"  # CUDA reserves far more than it uses
        assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "1000"
        assert os.getsid(pid) == pid  # its own session: its whole group is killed with it
    finally:
        host.close()
    assert not _alive(pid)


def test_a_model_error_in_the_host_is_the_series_row_and_the_host_serves_on(
    series: dict[str, Phantom], tmp_path: Path
) -> None:
    from tests.support.models import HuWindow

    spec = _spec(tmp_path, HuWindow(40.0, 70.0, channels=2))  # sigmoid declared, 2 channels returned
    host = ModelHost(spec)
    try:
        rows = outcome_rows(process_series(_row(series["healthy"]), config=_config(spec), model=host))
        stage, kind, message = _error(rows)
        assert (stage, kind) == ("inference", "ModelError") and "'sigmoid' output but returned 2" in message
        assert series["healthy"].series_uid in message and host.starts == 1
    finally:
        host.close()


def test_a_model_that_cannot_be_loaded_fails_at_start_and_leaves_no_process(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a TorchScript archive")
    path.with_suffix(".json").write_text('{"name": "b", "version": "1", "patch_size": [8, 8, 8]}')
    spec = parse_model_spec(f"torchscript:{path}", device="cpu")
    with pytest.raises(ModelError, match="cannot be loaded"):
        ModelHost(spec)
    assert not isolation._LIVE  # no host process is tracked (or running) after the failure


def test_kill_all_stops_the_host_too(tmp_path: Path) -> None:
    """The job's SIGINT/SIGTERM handlers kill every child: the model host among them."""
    from tests.support.models import HuWindow

    host = ModelHost(_spec(tmp_path, HuWindow(40.0, 70.0)))
    pid = host._host.pid  # type: ignore[union-attr]
    isolation.kill_all()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    host.close()


def test_requests_carry_no_voxels_and_no_headers(series: dict[str, Phantom]) -> None:
    """What the worker sends the host is small: the CT's voxels stay in their file."""
    from pipeline import channel
    from pipeline.dicom.ct import decode_ct_series
    from pipeline.model_host import InferenceRequest

    ct = decode_ct_series(str(series["healthy"].ct_dir))
    request = InferenceRequest(
        1, dataclasses.replace(ct, hu=np.empty((0, 0, 0), np.int16), headers=()), "a", "b"
    )
    import pickle

    payload = pickle.dumps(("predict", request), protocol=pickle.HIGHEST_PROTOCOL)
    assert len(payload) < 8000 and channel.loads_data(payload)[1].request_id == 1


def _alive(pid: int) -> bool:
    from tests.support.faults import pid_alive

    return pid_alive(pid)

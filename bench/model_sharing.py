"""Beam's ``Shared`` against ``MultiProcessShared`` for the model (issue 8), and the model host
(issue 21), on this machine's CPU.

``Shared`` keeps one model per SDK process, called directly. ``MultiProcessShared`` keeps one
model in a separate server process that several SDK processes can share (the way to share one GPU
between processes), and every call goes through a proxy: the CT volume is pickled to the server
and the mask back. This measures that price per call on a 512 x 512 x 108 phantom with the tiny
TorchScript model (median of 3 after a warm-up), so the choice can be made on numbers. The model
host (``pipeline.model_host``, what the job uses since issue 21) keeps the model in a process of its
own too, but nothing large crosses: it maps the CT from the ``.npy`` the decoding child wrote and
writes its prediction to a ``.npy``; it is compared with the same work done in this process
(``predict_to_file``, which writes the same file):

    .venv/bin/python -m bench.model_sharing
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path


def _load(model_path: str):  # type: ignore[no-untyped-def]
    from pipeline.models.spec import load_model, parse_model_spec

    spec = parse_model_spec(f"torchscript:{model_path}", device="cpu")
    assert spec is not None
    return load_model(spec)


def _timed(predict, ct, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    predict(ct)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(ct)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    import functools

    from apache_beam.utils.multi_process_shared import MultiProcessShared
    from apache_beam.utils.shared import Shared

    from bench.pipeline_stages import make_series, tiny_model
    from pipeline.dicom.ct import decode_ct_series

    with tempfile.TemporaryDirectory(prefix="lnq-bench-") as tmp:
        work = Path(tmp)
        model_path = str(tiny_model(work))
        row = make_series(work, 108, s3=False)
        ct = decode_ct_series(row["ct_series_url"])
        direct = Shared().acquire(functools.partial(_load, model_path))
        in_process = _timed(direct.predict, ct)
        served = MultiProcessShared(
            functools.partial(_load, model_path), tag=f"lnq-bench-{Path(tmp).name}", always_proxy=True
        ).acquire()
        proxied = _timed(served.predict, ct)
        hosted = _host_and_file(model_path, ct, work)
    volume_mb = ct.hu.nbytes / 1e6
    print(f"CT {ct.hu.shape} ({volume_mb:.0f} MB), tiny TorchScript model, CPU")
    print("| sharing | seconds per predict (median of 3) |")
    print("|---|---|")
    print(f"| Shared (in the SDK process) | {in_process:.2f} |")
    print(f"| MultiProcessShared (proxied to a model server) | {proxied:.2f} |")
    print(f"| in the SDK process, CT mapped, to .npy (median of 5) | {hosted['here_wall_s']:.2f} |")
    print(f"| ModelHost, same files (median of 5) | {hosted['host_wall_s']:.2f} |")
    print(f"proxy cost per series: {proxied - in_process:+.2f} s")
    cpu = hosted["host_cpu_s"] + hosted["worker_cpu_while_hosted_s"]
    print(
        f"model host cost per series: {hosted['host_wall_s'] - hosted['here_wall_s']:+.2f} s wall; CPU "
        f"{cpu:.2f} s (host {hosted['host_cpu_s']:.2f} + worker {hosted['worker_cpu_while_hosted_s']:.3f}) "
        f"against {hosted['here_cpu_s']:.2f} s in the SDK process ({cpu / hosted['here_cpu_s'] - 1:+.1%})"
    )


def _host_and_file(model_path: str, ct, work: Path, repeats: int = 5) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Median wall and CPU seconds per predict through a model host, and in this process writing the
    same file from the same memory-mapped CT (as the job's worker did before the host), interleaved:
    this shared machine's speed drifts by tens of percent within a minute, and CPU seconds drift less
    than wall seconds. The host's CPU is read from /proc; the worker's meanwhile (waiting, and its
    watchdog reading the host's memory every 50 ms) from getrusage."""
    import dataclasses
    import os
    import resource

    import numpy as np

    from pipeline.model_host import ModelHost, predict_to_file
    from pipeline.models.spec import load_model, parse_model_spec

    def cpu_of(pid: int) -> float:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    hu_path = work / "hu.npy"
    np.save(hu_path, ct.hu)
    mapped = dataclasses.replace(ct, hu=np.load(hu_path, mmap_mode="c"))
    spec = parse_model_spec(f"torchscript:{model_path}", device="cpu")
    assert spec is not None
    model = load_model(spec)
    host = ModelHost(spec)
    pid = host._host.pid  # type: ignore[union-attr]
    rows: list[tuple[float, float, float, float, float]] = []
    try:
        for i in range(repeats + 1):  # the first of each is a warm-up
            host_cpu, worker_cpu, start = cpu_of(pid), own_cpu(), time.perf_counter()
            host.predict(
                ct, hu_path=str(hu_path), save_to=str(work / "host.npy"), timeout_s=600.0, memory_bytes=None
            )
            host_cpu, worker_cpu, middle = cpu_of(pid) - host_cpu, own_cpu() - worker_cpu, time.perf_counter()
            here_cpu = own_cpu()
            predict_to_file(model, mapped, str(work / "here.npy"))
            here_cpu, end = own_cpu() - here_cpu, time.perf_counter()
            if i:
                rows.append((middle - start, host_cpu, worker_cpu, end - middle, here_cpu))
    finally:
        host.close()
    keys = ("host_wall_s", "host_cpu_s", "worker_cpu_while_hosted_s", "here_wall_s", "here_cpu_s")
    return {key: statistics.median(row[k] for row in rows) for k, key in enumerate(keys)}


if __name__ == "__main__":
    main()

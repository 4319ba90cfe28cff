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

    .venv/bin/python bench/model_sharing.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
        hosted, written = _host_and_file(model_path, ct, work, direct)
    volume_mb = ct.hu.nbytes / 1e6
    print(f"CT {ct.hu.shape} ({volume_mb:.0f} MB), tiny TorchScript model, CPU")
    print("| sharing | seconds per predict (median of 3) |")
    print("|---|---|")
    print(f"| Shared (in the SDK process) | {in_process:.2f} |")
    print(f"| MultiProcessShared (proxied to a model server) | {proxied:.2f} |")
    print(f"| predict_to_file (in the SDK process, writing the .npy; median of 5) | {written:.2f} |")
    print(f"| ModelHost (own process, CT and prediction as .npy; median of 5) | {hosted:.2f} |")
    print(f"proxy cost per series: {proxied - in_process:+.2f} s")
    print(f"model host cost per series: {hosted - written:+.2f} s")


def _host_and_file(model_path: str, ct, work: Path, direct, repeats: int = 5) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median seconds per predict through a model host, and in this process writing the same file,
    the two interleaved (this machine's speed drifts by tens of percent within a minute)."""
    import numpy as np

    from pipeline.model_host import ModelHost, predict_to_file
    from pipeline.models.spec import parse_model_spec

    hu_path = work / "hu.npy"
    np.save(hu_path, ct.hu)
    spec = parse_model_spec(f"torchscript:{model_path}", device="cpu")
    assert spec is not None
    host = ModelHost(spec)
    hosted, here = [], []
    try:
        for i in range(repeats + 1):  # the first of each is a warm-up
            start = time.perf_counter()
            host.predict(
                ct, hu_path=str(hu_path), save_to=str(work / "host.npy"), timeout_s=600.0, memory_bytes=None
            )
            middle = time.perf_counter()
            predict_to_file(direct, ct, str(work / "here.npy"))
            if i:
                hosted.append(middle - start)
                here.append(time.perf_counter() - middle)
    finally:
        host.close()
    return statistics.median(hosted), statistics.median(here)


if __name__ == "__main__":
    main()

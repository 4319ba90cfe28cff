"""Beam's ``Shared`` against ``MultiProcessShared`` for the model (issue 8), on this machine's CPU.

``Shared`` keeps one model per SDK process, called directly. ``MultiProcessShared`` keeps one
model in a separate server process that several SDK processes can share (the way to share one GPU
between processes), and every call goes through a proxy: the CT volume is pickled to the server
and the mask back. This measures that price per call on a 512 x 512 x 108 phantom with the tiny
TorchScript model (median of 3 after a warm-up), so the choice can be made on numbers:

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
    volume_mb = ct.hu.nbytes / 1e6
    print(f"CT {ct.hu.shape} ({volume_mb:.0f} MB), tiny TorchScript model, CPU")
    print("| sharing | seconds per predict (median of 3) |")
    print("|---|---|")
    print(f"| Shared (in the SDK process) | {in_process:.2f} |")
    print(f"| MultiProcessShared (proxied to a model server) | {proxied:.2f} |")
    print(f"proxy cost per series: {proxied - in_process:+.2f} s")


if __name__ == "__main__":
    main()

"""Seconds per stage and peak memory for one series, on LNQ-sized phantoms.

For each size (512 x 512 x 108 slices, LNQ's median, and 512 x 512 x 556, its
largest) a phantom CT and its reference SEG are written as DICOM, served from a
local S3 server (moto) to the real s5cmd (unless --local), and processed by
``pipeline.process.process_series`` with the tiny TorchScript model: fetch,
decode, reference, inference, post-processing, measurement, SEG writing, scoring,
then the Parquet tables are written. Each size runs in a fresh child process so
its peak resident memory (``VmHWM``, see ``bench/_procmem.py``) is its own.
``worker_series_peak_mib`` is what the worker (the process that holds the model;
decoding, measuring and writing run in isolated children) held for the series
above what it held before it (``..._anon_...``: its anonymous part, without the
pages of the CT file the decoding child wrote, which the worker maps), next to
``budget_mib``: the CT volume, one float32 copy on the model's grid, and the model
file (issue 11's goal for model mode).

    .venv/bin/python -m bench.pipeline_stages [--sizes 108 556] [--device cpu|cuda] [--local]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench._procmem import own_anon_rss_bytes, own_peak_rss_bytes, rss_bytes
from bench.harness import child_env, lnq_sized_phantom, machine, module_command


def make_series(work: Path, n_slices: int, *, s3: bool) -> dict:
    """Write the phantom (and upload it); return the cohort row."""
    phantom = lnq_sized_phantom(work / f"p{n_slices}", n_slices)
    ct_url, seg_url = str(phantom.ct_dir), str(phantom.seg_path)
    if s3 and os.environ.get("LNQ_BENCH_S3_ROOT"):  # bench/_static_s3.py serves this folder
        from bench._static_s3 import place_series
        from tests.support.s3 import BUCKET

        root = Path(os.environ["LNQ_BENCH_S3_ROOT"])
        ct_url, seg_url = (
            place_series(root, BUCKET, phantom.ct_dir),
            place_series(root, BUCKET, phantom.seg_path),
        )
    elif s3:
        from tests.support import s3 as s3_support

        client = s3_support.public_bucket(os.environ["LNQ_BENCH_S3"])
        ct_url, seg_url = (
            s3_support.upload_series(client, phantom.ct_dir),
            s3_support.upload_series(client, phantom.seg_path),
        )
    return {
        "patient_id": phantom.patient_id,
        "study_instance_uid": phantom.study_uid,
        "ct_series_instance_uid": phantom.series_uid,
        "ct_series_url": ct_url,
        "seg_series_instance_uid": phantom.seg_series_uid,
        "seg_series_url": seg_url,
        "annotation": "full",
        "ct_instance_count": n_slices,
        "ct_size_mb": None,
    }


def tiny_model(work: Path) -> Path:
    import torch

    from tests.support.models import TinyConvNet, save_torchscript

    torch.manual_seed(0)
    return save_torchscript(
        TinyConvNet(),
        work / "tiny.pt",
        name="tiny-conv",
        version="1",
        spacing_mm=[2.5, 1.5, 1.5],
        patch_size=(32, 128, 128),
        overlap=0.25,
    )


def child(args: argparse.Namespace) -> None:
    """Process one series and print its timings as JSON (runs in a fresh process)."""
    import pyarrow.parquet as pq

    from pipeline.enums import TIMED_STAGES
    from pipeline.fetch.s5cmd import FetchConfig
    from pipeline.models.spec import load_model, parse_model_spec
    from pipeline.outputs.rows import outcome_rows
    from pipeline.outputs.schemas import stage_column, to_table
    from pipeline.process import ProcessConfig, process_series

    row = json.loads(Path(args.row).read_text())
    spec = parse_model_spec(f"torchscript:{args.model}", device=args.device)
    assert spec is not None
    start = time.perf_counter()
    model = load_model(spec)
    load_s = time.perf_counter() - start
    out = Path(args.out)

    def sink(kind: str, uid: str, made: str) -> str:
        path = out / kind / f"{uid}.{'png' if kind == 'qc' else 'dcm'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, path)
        return str(path)

    config = ProcessConfig(fetch=FetchConfig(endpoint_url=os.environ.get("LNQ_BENCH_S3", "")), model=spec)
    _warm_up(model)
    window_mib = _window_working_mib(model)
    # the worker before the series: interpreter, libraries, the model
    baseline, anon_baseline = rss_bytes(os.getpid()), own_anon_rss_bytes()
    sampler = _RssPeak()
    predict = model.predict

    def predict_marked(*a, **kw):  # type: ignore[no-untyped-def]
        sampler.phase = "inference"
        try:
            return predict(*a, **kw)
        finally:
            sampler.phase = "other"

    model.predict = predict_marked
    sampler.start()
    outcome = process_series(row, config=config, model=model, sink=sink)
    peak, anon_peak = sampler.stop()
    series_peak, series_anon_peak = peak - baseline, anon_peak - anon_baseline
    phase_anon = {k: round((v - anon_baseline) / 2**20, 1) for k, v in sampler.phase_anon_peak.items()}
    budget = _worker_budget(row, spec, args.model, series_peak)
    if outcome.errors:
        raise SystemExit(f"series failed: {outcome.errors}")
    result = outcome_rows(outcome)
    start = time.perf_counter()
    for table, rows in (("series", [result.series]), ("nodes", result.nodes), ("errors", result.errors)):
        (out / table).mkdir(exist_ok=True)
        pq.write_table(to_table(rows, table), out / table / "part-00000-of-00001.parquet")
    parquet_s = time.perf_counter() - start
    s = result.series
    stages = {stage.value: s[stage_column(stage)] for stage in TIMED_STAGES}
    gpu_peak = None
    if spec.device != "cpu":
        import torch

        if torch.cuda.is_available():
            gpu_peak = torch.cuda.max_memory_allocated() / 2**20
    print(
        json.dumps(
            {
                "slices": s["n_slices"],
                "model_load_s": round(load_s, 3),
                **{k: round(v or 0.0, 3) for k, v in stages.items()},
                "parquet_s": round(parquet_s, 4),
                "total_s": round(s["total_s"] + parquet_s, 3),
                "peak_rss_mib": round(own_peak_rss_bytes() / 2**20, 1),
                **budget,
                "worker_series_anon_peak_mib": round(series_anon_peak / 2**20, 1),
                "worker_inference_anon_peak_mib": phase_anon.get("inference"),
                "worker_other_anon_peak_mib": phase_anon.get("other"),
                "model_window_working_mib": round(window_mib, 1),
                "budget_with_window_mib": round(budget["budget_mib"] + window_mib, 1),
                "gpu_peak_mib": None if gpu_peak is None else round(gpu_peak, 1),
                "nodes_reference": s["n_reference_nodes"],
                "nodes_predicted": s["n_prediction_nodes"],
                "seg_bytes": os.path.getsize(s["seg_uri"]),
            }
        )
    )


def _warm_up(model) -> None:  # type: ignore[no-untyped-def]
    """One prediction on a small CT first, as a worker that has run a series has: what the first
    call loads (lazy imports, the runtime's thread pools and caches) is not the series' memory."""
    import numpy as np

    from pipeline.geometry import CtVolume, Geometry

    grid = Geometry(
        size_zyx=(24, 96, 96),
        origin_mm=(0.0, 0.0, 0.0),
        spacing_mm=(0.8, 0.8, 2.5),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    hu = np.full(grid.size_zyx, -1000, dtype=np.int16)
    model.predict(
        CtVolume(
            hu=hu,
            geometry=grid,
            series_uid="warm-up",
            study_uid="",
            frame_of_reference_uid="",
            patient_id="",
            sop_instance_uids=(),
        )
    )


def _window_working_mib(model) -> float:  # type: ignore[no-untyped-def]
    """What running the model on one window takes (its activations and the runtime's scratch):
    the anonymous peak above the start of one forward pass on a window of the patch size, the
    largest of three; this is part of "the model" in the budget, whatever stitches the windows."""
    import torch

    patch = model.sidecar.patch_size
    x = torch.full((1, 1, *patch), -500.0, device=model.device)
    worst = 0
    with torch.inference_mode():
        for _ in range(3):
            sampler = _RssPeak(interval=0.002)
            sampler.start()
            model.module(x)
            _, anon_peak = sampler.stop()
            worst = max(worst, anon_peak - sampler.anon_start)
    return worst / 2**20


class _RssPeak:
    """This process's resident set and its anonymous part, sampled every 20 ms in a thread, until
    :meth:`stop`."""

    def __init__(self, interval: float = 0.02) -> None:
        import threading

        self.interval = interval
        self.anon_start = self.anon_peak = own_anon_rss_bytes()
        self.peak = rss_bytes(os.getpid())
        self.phase = "other"
        self.phase_anon_peak: dict[str, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        anon = own_anon_rss_bytes()
        self.peak = max(self.peak, rss_bytes(os.getpid()))
        self.anon_peak = max(self.anon_peak, anon)
        self.phase_anon_peak[self.phase] = max(self.phase_anon_peak.get(self.phase, 0), anon)

    def stop(self) -> tuple[int, int]:
        self._done.set()
        self._thread.join()
        self._sample()
        return self.peak, self.anon_peak


def _worker_budget(row: dict, spec, model_path: str, series_peak: int) -> dict:  # type: ignore[no-untyped-def]
    """What model mode may hold in the worker for one series (issue 11): the CT volume (int16),
    one float32 copy on the model's grid, and the model; next to what it held (peak RSS during
    the series minus RSS before it; the isolated children's memory is their own)."""
    import numpy as np

    from pipeline.models.torchscript import TorchScriptSidecar, sidecar_path

    z = int(row["ct_instance_count"])
    spacing_zyx = (1.25, 0.78, 0.78) if z > 300 else (2.5, 0.78, 0.78)
    ct_bytes = z * 512 * 512 * 2
    extent = np.array([z, 512, 512]) * np.array(spacing_zyx)
    spacing = TorchScriptSidecar.read(sidecar_path(model_path)).spacing_mm or spacing_zyx
    grid = np.maximum(1, np.round(extent / np.array(spacing)))
    model_grid_bytes = int(np.prod(grid)) * 4
    model_bytes = os.path.getsize(model_path)
    mib = 2**20
    return {
        "worker_series_peak_mib": round(series_peak / mib, 1),
        "budget_ct_mib": round(ct_bytes / mib, 1),
        "budget_model_grid_mib": round(model_grid_bytes / mib, 1),
        "budget_model_mib": round(model_bytes / mib, 2),
        "budget_mib": round((ct_bytes + model_grid_bytes + model_bytes) / mib, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[108, 556])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--local", action="store_true", help="read the phantoms from disk, no S3 server")
    parser.add_argument("--json-out", help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import torch

    results = []
    with tempfile.TemporaryDirectory(prefix="lnq-bench-") as tmp:
        work = Path(tmp)
        moto = None
        if not args.local:
            from tests.support.s3 import start_moto

            moto, endpoint = start_moto()
            os.environ["LNQ_BENCH_S3"] = endpoint
        try:
            model = tiny_model(work)
            for n in args.sizes:
                row_path = work / f"row{n}.json"
                row_path.write_text(json.dumps(make_series(work, n, s3=not args.local)))
                done = subprocess.run(
                    [
                        *module_command(__spec__.name),
                        "--child",
                        "--row",
                        str(row_path),
                        "--model",
                        str(model),
                        "--out",
                        str(work / f"out{n}"),
                        "--device",
                        args.device,
                    ],
                    env=child_env(),
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    raise SystemExit(f"size {n} failed:\n{done.stderr[-3000:]}")
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            if moto is not None:
                moto.terminate()
    ran_on = {
        **machine(),
        "torch": torch.__version__,
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device != "cpu" and torch.cuda.is_available() else None,
        "fetch": "local folder" if args.local else "moto S3 on loopback via s5cmd",
    }
    report = {"machine": ran_on, "results": results}
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    columns = [
        "slices",
        "fetch",
        "decode",
        "reference",
        "inference",
        "postprocess",
        "measure",
        "seg_write",
        "score",
        "parquet_s",
        "total_s",
        "peak_rss_mib",
        "worker_series_peak_mib",
        "worker_series_anon_peak_mib",
        "worker_inference_anon_peak_mib",
        "model_window_working_mib",
        "budget_mib",
        "budget_with_window_mib",
        "gpu_peak_mib",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in results:
        print("| " + " | ".join(str(r.get(c)) for c in columns) + " |")


if __name__ == "__main__":
    main()

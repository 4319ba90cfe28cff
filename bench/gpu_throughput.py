"""Model mode on a GPU (issue 11): GPU utilisation, series per hour and cost per series.

For each model, ``lnq run`` processes the same ``--series`` phantoms (512 x 512 x 108, LNQ's
median, 9 nodes, read from local disk: a GPU machine has no S3 stand-in) twice: with
``--workers 1``, and with ``--workers 2``, where two series threads share the one loaded model, so
the CPU stages of one series (decode, measure, SEG, SR, QC, in their isolated children) run while
the other's inference holds the GPU: what ``--series-per-worker 2`` gives a Dataflow GPU worker.
Models:

- ``tiny``: the TorchScript TinyConvNet of ``bench/pipeline_stages.py`` (random weights);
- ``nnunet``: an nnU-Net v2 results folder with a network of the size nnU-Net plans for CT
  (``tests/support/models.py: NNUNET_CT_FULLRES_STAGES``, six stages, 32 to 320 features, patch
  64 x 192 x 192), random weights (the output layer's foreground bias lowered by
  ``--nnunet-fg-offset``, so that it predicts about 3,200 speckle nodes per series rather than
  hundreds of thousands), one fold, no test-time mirroring.

``nvidia-smi`` is sampled every 200 ms during each run. Printed per run: wall seconds, series per
hour (from the first to the last series' progress line, so the one-off start-up and model load
are left out; and "after fill", from the ``workers``-th line, since with several series in flight
the first ones finish together), GPU utilisation (mean and median of the samples between the
first and last lines), peak GPU memory, predicted nodes per series, the mean seconds per series of
inference and of the CPU stages (every other timed stage, from the series table), and the cost per
series at ``--price-per-hour`` and the after-fill rate (the price is an assumption you give, for
example an L4 worker's all-in price; nothing is looked up). Without a GPU (``--device cpu``) it
runs the same way and reports no utilisation, which is how it is tested on a machine without one.

    python bench/gpu_throughput.py [--models tiny nnunet] [--series 6] [--device cuda]
                                   [--price-per-hour 1.00]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.harness import ROOT, lnq_command
from bench.local_run import finished_series, read_progress, stage_seconds
from pipeline.enums import NodeSource, Stage
from pipeline.outputs.schemas import burden_column


@dataclass
class GpuRun:
    model: str
    workers: int
    n_series: int
    wall_s: float
    progress_at_s: list[float]
    utilisation: list[tuple[float, float]] = field(default_factory=list)  # (seconds, percent)
    memory_mib: list[float] = field(default_factory=list)
    prediction_nodes: list[int] = field(default_factory=list)
    stage_s: list[dict[str, float]] = field(default_factory=list)  # per series: stage -> seconds

    @property
    def series_per_hour(self) -> float | None:
        """From the first to the last progress line: n - 1 series in that time."""
        if len(self.progress_at_s) < 2:
            return None
        span = self.progress_at_s[-1] - self.progress_at_s[0]
        return 3600.0 * (len(self.progress_at_s) - 1) / span if span > 0 else None

    @property
    def series_per_hour_after_fill(self) -> float | None:
        """From the ``workers``-th progress line to the last: with several series in flight the
        first ones finish together, late, and the first-to-last span flatters the rate."""
        n, w = len(self.progress_at_s), max(1, self.workers)
        if n <= w:
            return None
        span = self.progress_at_s[-1] - self.progress_at_s[w - 1]
        return 3600.0 * (n - w) / span if span > 0 else None

    def busy(self) -> list[float]:
        """Utilisation samples while series ran (first to last progress line)."""
        if len(self.progress_at_s) < 2:
            return [u for _, u in self.utilisation]
        lo, hi = self.progress_at_s[0], self.progress_at_s[-1]
        return [u for t, u in self.utilisation if lo <= t <= hi]


class GpuSampler(threading.Thread):
    """``nvidia-smi`` utilisation and memory of GPU 0 every ``interval_ms``, until :meth:`stop`."""

    def __init__(self, start: float, interval_ms: int = 200):
        super().__init__(daemon=True)
        self.start_time = start
        self.samples: list[tuple[float, float, float]] = []
        self.proc: subprocess.Popen[str] | None = None
        self.interval_ms = interval_ms

    def run(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        self.proc = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                f"-lms={self.interval_ms}",
                "-i=0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                util, mem = (float(v) for v in line.strip().split(","))
            except ValueError:
                continue
            self.samples.append((time.perf_counter() - self.start_time, util, mem))

    def stop(self) -> list[tuple[float, float, float]]:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.join(timeout=10)
        return self.samples


def make_models(work: Path, names: list[str], nnunet_fg_offset: float = 3.6) -> dict[str, list[str]]:
    """The ``lnq run`` model arguments of each named model."""
    from bench.pipeline_stages import tiny_model
    from tests.support.models import NNUNET_CT_FULLRES_PATCH, NNUNET_CT_FULLRES_STAGES, make_nnunet_folder

    models: dict[str, list[str]] = {}
    for name in names:
        if name == "tiny":
            models[name] = ["--model", f"torchscript:{tiny_model(work)}"]
        elif name == "nnunet":
            folder = make_nnunet_folder(
                work / "Dataset998_LNQFullres",
                spacing_zyx=(2.5, 0.8, 0.8),
                patch_size=NNUNET_CT_FULLRES_PATCH,
                stages=NNUNET_CT_FULLRES_STAGES,
                foreground_logit_offset=nnunet_fg_offset,
            )
            models[name] = ["--model", f"nnunet:{folder}", "--folds", "0", "--no-tta"]
        elif name == "nnunet-small":  # the same code path at a size a CPU runs in seconds (tests)
            folder = make_nnunet_folder(work / "Dataset999_LNQTiny")
            models[name] = ["--model", f"nnunet:{folder}", "--folds", "0", "--no-tta", "--step-size", "1.0"]
        else:
            raise SystemExit(f"unknown model {name!r}")
    return models


def write_cohort(work: Path, n_series: int, n_slices: int) -> Path:
    from bench.harness import lnq_sized_phantom
    from pipeline.demo.cohort import cohort_row
    from pipeline.demo.cohort import write_cohort as write

    rows = []
    for i in range(n_series):
        phantom = lnq_sized_phantom(work / f"p{i}", n_slices, seed=100 + i)
        rows.append(cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path)))
    return write(work / "cohort.parquet", rows)


def run_lnq(model: str, args: list[str], cohort: Path, output: Path, workers: int, device: str) -> GpuRun:
    command = [
        *lnq_command(),
        "run",
        "--cohort",
        str(cohort),
        "--output",
        str(output),
        "--fresh",
        "--device",
        device,
        "--workers",
        str(workers),
        *args,
    ]
    start = time.perf_counter()
    sampler = GpuSampler(start)
    sampler.start()
    progress: list[float] = []
    tail: list[str] = []
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    read_progress(proc, start, progress, tail)
    rc = proc.wait()
    wall = time.perf_counter() - start
    samples = sampler.stop()
    series = finished_series(f"{model} --workers {workers}", rc, tail, output)
    return GpuRun(
        model,
        workers,
        len(series),
        wall,
        progress,
        [(t, u) for t, u, _ in samples],
        [m for _, _, m in samples],
        [s[burden_column("n_nodes", NodeSource.PREDICTION)] or 0 for s in series],
        stage_seconds(series),
    )


def _mean_stage(run: GpuRun, *, inference: bool) -> float | None:
    """Mean seconds per series of inference, or of every other timed stage (the CPU stages)."""
    if not run.stage_s:
        return None
    totals = [
        sum(v for k, v in st.items() if (k == Stage.INFERENCE.value) == inference) for st in run.stage_s
    ]
    return statistics.mean(totals)


def summary_rows(runs: list[GpuRun], price_per_hour: float | None) -> list[dict]:
    rows = []
    for r in runs:
        busy = r.busy()
        per_hour = r.series_per_hour
        steady = r.series_per_hour_after_fill
        rows.append(
            {
                "model": r.model,
                "workers": r.workers,
                "series": r.n_series,
                "wall_s": round(r.wall_s, 1),
                "series_per_hour": None if per_hour is None else round(per_hour, 1),
                "series_per_hour_after_fill": _round(r.series_per_hour_after_fill, 1),
                "gpu_util_mean": round(statistics.mean(busy), 1) if busy else None,
                "gpu_util_median": round(statistics.median(busy), 1) if busy else None,
                "gpu_mem_peak_mib": max(r.memory_mib) if r.memory_mib else None,
                "nodes_per_series": _round(_mean(r.prediction_nodes), 0),
                "inference_s": _round(_mean_stage(r, inference=True)),
                "cpu_stages_s": _round(_mean_stage(r, inference=False)),
                "cost_per_series": (  # at the after-fill rate, the conservative one
                    round(price_per_hour / steady, 4) if price_per_hour and steady else None
                ),
            }
        )
    return rows


def _mean(values: list[int]) -> float | None:
    return statistics.mean(values) if values else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "nnunet"])
    parser.add_argument("--series", type=int, default=6)
    parser.add_argument("--slices", type=int, default=108)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--price-per-hour", type=float, help="the worker's all-in price per hour (an assumption)"
    )
    parser.add_argument(
        "--nnunet-fg-offset",
        type=float,
        default=3.6,
        help="lowers the random nnU-Net's foreground logit (see the module docstring)",
    )
    parser.add_argument("--json-out")
    args = parser.parse_args()

    runs: list[GpuRun] = []
    with tempfile.TemporaryDirectory(prefix="lnq-bench-gpu-") as tmp:
        work = Path(tmp)
        cohort = write_cohort(work, args.series, args.slices)
        models = make_models(work, args.models, args.nnunet_fg_offset)
        for name, model_args in models.items():
            for workers in args.workers:
                run = run_lnq(name, model_args, cohort, work / f"out-{name}-{workers}", workers, args.device)
                runs.append(run)
                print(  # each run's row as it ends, so a run cut short still reports the others
                    f"{name} --workers {workers}: {json.dumps(summary_rows([run], args.price_per_hour)[0])}",
                    file=sys.stderr,
                )
    rows = summary_rows(runs, args.price_per_hour)
    report = {
        "device": args.device,
        "gpu": _gpu_name(),
        "cpus": len(os.sched_getaffinity(0)),  # what ``taskset`` leaves it
        "price_per_hour_assumed": args.price_per_hour,
        "rows": rows,
        "runs": [asdict(r) for r in runs],
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    columns = list(rows[0]) if rows else []
    print(f"device {args.device} ({report['gpu'] or 'no GPU'}), {report['cpus']} CPUs")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join("-" if row[c] is None else str(row[c]) for c in columns) + " |")


def _gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i=0"], capture_output=True, text=True
    )
    return done.stdout.strip() or None


if __name__ == "__main__":
    main()

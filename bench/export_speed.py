"""Training export speed and memory per series, against ``lnq run`` in reference mode on the same series.

For each size (512 x 512 x 108 slices, LNQ's median, and 512 x 512 x 556, its largest) one phantom
CT with its reference SEG is written to local disk (a partially annotated case, so the export's
known-background rule runs), then ``lnq run`` (reference mode) and ``lnq export-training`` process it
in turn, ``--repeats`` times each, interleaved (this machine is noisy), each as a child process whose
whole process tree's resident memory is sampled (``bench/_procmem.py``). Per series: the run's
``total_s`` (``series`` table) and the export's (``cases.parquet``, with its ``export_s``: labels,
NIfTI writing and copying). The NIfTI writing alone (``write_nifti`` of the decoded CT and a uint8
label volume, in this process) is timed apart, for the goal "no slower than reference mode per
series, plus the NIfTI writing".

    .venv/bin/python -m bench.export_speed [--sizes 108 556] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench._procmem import TreeSampler
from bench.harness import ROOT, lnq_command, machine

GIB = 1024**3


def make_series(work: Path, n_slices: int) -> Path:
    """A 512 x 512 phantom of ``n_slices`` (as ``bench/pipeline_stages.py`` makes them) and its cohort."""

    from bench.harness import lnq_sized_phantom
    from pipeline.demo.cohort import cohort_row, write_cohort

    phantom = lnq_sized_phantom(work / f"p{n_slices}", n_slices, annotation="partial")
    cohort = work / f"cohort{n_slices}.parquet"
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    write_cohort(cohort, [row])
    return cohort


def run_child(command: list[str], output: Path) -> dict:
    """Run one lnq command; its wall time and its process tree's memory peaks."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    _, err = proc.communicate()
    wall_s = time.perf_counter() - start
    peak = asdict(sampler.stop())
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:5])} exited {proc.returncode}:\n{err[-3000:]}")
    return {"wall_s": wall_s, "peak": peak}


def reference_run(cohort: Path, output: Path) -> dict:
    from beam_jobs.publish import read_table

    done = run_child(lnq_command("run", "--cohort", str(cohort), "--output", str(output), "--fresh"), output)
    (series,) = read_table(str(output), "series").to_pylist()
    shutil.rmtree(output, ignore_errors=True)
    stages = {
        k[:-2]: series[k] for k in ("fetch_s", "decode_s", "reference_s", "measure_s", "seg_write_s", "qc_s")
    }
    return {**done, "total_s": series["total_s"], "stages": stages}


def export_run(cohort: Path, output: Path) -> dict:
    import pyarrow.parquet as pq

    command = lnq_command("export-training", "--cohort", str(cohort), "--output", str(output), "--fresh")
    done = run_child(command, output)
    (case,) = pq.read_table(output / "Dataset501_LNQ" / "cases.parquet").to_pylist()
    shutil.rmtree(output, ignore_errors=True)
    stages = {k[:-2]: case[k] for k in ("fetch_s", "decode_s", "reference_s", "export_s")}
    return {**done, "total_s": case["total_s"], "stages": stages}


def nifti_write_s(cohort: Path, work: Path) -> float:
    """Seconds to write the series' CT and a uint8 label volume as .nii.gz (this process)."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.dicom.ct import decode_ct_series
    from pipeline.training.nifti import write_nifti

    (row,) = pq.read_table(cohort).to_pylist()
    ct = decode_ct_series(row["ct_series_url"])
    labels = np.full(ct.hu.shape, 2, dtype=np.uint8)
    labels[ct.hu < -500] = 0
    start = time.perf_counter()
    write_nifti(ct.hu, ct.geometry, str(work / "image.nii.gz"))
    write_nifti(labels, ct.geometry, str(work / "label.nii.gz"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[108, 556])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results = {"machine": machine(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="lnq-bench-export-") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            cohort = make_series(work, n)
            runs: dict[str, list[dict]] = {"reference": [], "export": []}
            for _ in range(args.repeats):
                runs["reference"].append(reference_run(cohort, work / "run"))
                runs["export"].append(export_run(cohort, work / "export"))
            nifti = nifti_write_s(cohort, work)
            results["sizes"][n] = {"runs": runs, "nifti_write_s": nifti}
            shutil.rmtree(work / f"p{n}", ignore_errors=True)
    print(json.dumps(results, indent=1))
    print()
    print(
        "| slices | reference total_s | export total_s | NIfTI writing s | export - reference | "
        "peak RSS sum, reference / export (GiB) | peak PSS sum (GiB) | largest process (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, size in results["sizes"].items():
        ref, exp = size["runs"]["reference"], size["runs"]["export"]

        def med(runs: list[dict], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        def peak(runs: list[dict], key: str) -> str:
            return " / ".join(f"{r['peak'][key] / GIB:.2f}" for r in runs)

        print(
            f"| {n} | {med(ref, 'total_s'):.2f} | {med(exp, 'total_s'):.2f} | {size['nifti_write_s']:.2f} | "
            f"{med(exp, 'total_s') - med(ref, 'total_s'):+.2f} | {peak(ref, 'rss_sum_bytes')} ; "
            f"{peak(exp, 'rss_sum_bytes')} | {peak(ref, 'pss_sum_bytes')} ; {peak(exp, 'pss_sum_bytes')} | "
            f"{peak(ref, 'single_rss_bytes')} ; {peak(exp, 'single_rss_bytes')} |"
        )


if __name__ == "__main__":
    main()

"""Seconds and bytes per QC picture on LNQ-sized grids, and seconds to write a 513-series report.

QC: a phantom of LNQ's median size (108 x 512 x 512, 0.78 x 0.78 x 2.5 mm; three nodes, the
prediction the reference moved by 2 voxels) and the largest grid (556 slices: the same slab
repeated along z), each drawn ``--repeat`` times after one warm-up (fonts, caches), as a worker
draws every series after its first. Report: ``write_report_for_output`` on a made-up 513-series
model-mode run (Parquet tables and 513 QC file names in a temporary folder), which reads the
tables through Beam's FileSystems, draws the plots and writes the page.

    .venv/bin/python -m bench.report_speed [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from beam_jobs.report import write_report_for_output
from bench.harness import machine
from pipeline.demo.phantoms import make_phantom
from pipeline.geometry import Geometry
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled
from pipeline.qc import nodes_for_qc, qc_png
from tests.pipeline.report.synthetic import random_tables

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
N_SERIES = 513


def _time_qc(hu: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float], repeat: int) -> dict:
    geometry = Geometry(hu.shape, (-200.0, -200.0, -300.0), spacing, IDENTITY)
    reference = label_nodes(mask, geometry)
    prediction = label_nodes(np.roll(mask, 2, axis=2), geometry)
    nodes = nodes_for_qc(measure_labelled(reference, geometry), "reference")
    nodes += nodes_for_qc(measure_labelled(prediction, geometry), "prediction")
    kwargs = {"reference_labels": reference, "prediction_labels": prediction, "nodes": nodes}
    qc_png(hu, geometry, **kwargs)  # warm-up
    seconds, cpu_seconds = [], []
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        png = qc_png(hu, geometry, **kwargs)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return {
        "grid_zyx": list(hu.shape),
        "seconds_median": round(float(np.median(seconds)), 4),
        "seconds_max": round(max(seconds), 4),
        "cpu_seconds_median": round(float(np.median(cpu_seconds)), 4),
        "bytes": len(png),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    results: dict = {
        "machine": machine(),  # its load average: other work on the machine inflates wall time
    }
    with tempfile.TemporaryDirectory() as tmp:
        spacing = (0.78, 0.78, 2.5)
        phantom = make_phantom(
            Path(tmp) / "phantom",
            shape_zyx=(108, 512, 512),
            pixel_spacing_mm=spacing[:2],
            slice_spacing_mm=spacing[2],
            write_seg=False,
        )
        results["qc_median_grid"] = _time_qc(phantom.hu, phantom.mask, spacing, args.repeat)
        reps = -(-556 // 108)
        big_hu = np.concatenate([phantom.hu] * reps)[:556]
        big_mask = np.concatenate([phantom.mask] * reps)[:556]
        results["qc_largest_grid"] = _time_qc(big_hu, big_mask, (0.78, 0.78, 1.25), args.repeat)

        output = Path(tmp) / "run"
        tables = random_tables(N_SERIES, model="nnunet:/models/lnq", failed_every=25, seed=1)
        for name, table in zip(("series", "nodes", "errors"), tables, strict=True):
            (output / name).mkdir(parents=True)
            pq.write_table(table, output / name / "part-00000-of-00001.parquet")
        (output / "qc").mkdir()
        for row in tables[0].to_pylist():
            if row["status"] == "ok":
                (output / "qc" / f"{row['ct_series_instance_uid']}.png").write_bytes(b"\x89PNG")
        start, cpu_start = time.perf_counter(), time.process_time()
        index = write_report_for_output(str(output), {"wall_s": 3600.0})
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        report_bytes = sum(p.stat().st_size for p in (output / "report").rglob("*") if p.is_file())
        results["report"] = {
            "n_series": N_SERIES,
            "n_nodes": tables[1].num_rows,
            "seconds": round(elapsed, 2),
            "cpu_seconds": round(cpu, 2),
            "bytes": report_bytes,
            "index_bytes": Path(index).stat().st_size,
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""``lnq run`` with a model that hangs on one series: that series is a ``SeriesTimeout`` row at
``inference`` after ``--series-timeout``, the others are measured, the run ends (exit 3), and no
process of the run (model host, fork server, children) outlives it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from beam_jobs.publish import read_table
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.faults import read_leftovers, under_subreaper
from tests.support.models import save_torchscript
from tests.support.phantoms import make_phantom


@pytest.mark.slow
def test_a_hanging_model_costs_one_series_not_the_run(tmp_path: Path) -> None:
    from tests.pipeline.test_model_host import HangsOnBright, _with_metal

    shape = (12, 64, 64)
    healthy = [
        make_phantom(tmp_path / f"h{i}", seed=90 + i, noise_sd=0.0, anatomy=False, shape_zyx=shape)
        for i in range(2)
    ]
    metal = _with_metal(make_phantom(tmp_path / "m", seed=95, noise_sd=0.0, anatomy=False, shape_zyx=shape))
    cohort = tmp_path / "cohort.parquet"
    rows = [cohort_row(p, ct_url=str(p.ct_dir), seg_url=str(p.seg_path)) for p in (metal, *healthy)]
    write_cohort(cohort, rows)
    model = save_torchscript(HangsOnBright(), tmp_path / "model" / "hangs.pt", patch_size=(8, 32, 32))
    command = [
        *LNQ,
        "run",
        "--cohort",
        str(cohort),
        "--output",
        str(tmp_path / "out"),
    ]
    command += [
        "--model",
        f"torchscript:{model}",
        "--device",
        "cpu",
        "--workers",
        "2",
        "--series-timeout",
        "25",
    ]
    leftovers = tmp_path / "leftovers.json"
    done = subprocess.run(
        under_subreaper(command, leftovers),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 3, done.stderr[-3000:]
    series = {r["ct_series_instance_uid"]: r for r in read_table(str(tmp_path / "out"), "series").to_pylist()}
    errors = {r["ct_series_instance_uid"]: r for r in read_table(str(tmp_path / "out"), "errors").to_pylist()}
    assert (errors[metal.series_uid]["stage"], errors[metal.series_uid]["error_type"]) == (
        "inference",
        "SeriesTimeout",
    )
    assert all(series[p.series_uid]["status"] == "ok" for p in healthy)
    assert read_leftovers(leftovers) == []  # the model host went with the run

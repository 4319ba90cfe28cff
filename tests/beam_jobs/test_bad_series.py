"""One bad series never stops, hangs or poisons a cohort run (``lnq run`` end to end).

A cohort of good phantoms and hostile ones (memory bombs in CT and SEG headers, an absurd
rescale, a NaN position, a SEG frame pointing at an instance the CT does not have): every
hostile series must end as its own error row at the right stage, the good ones exactly as in
a clean run, the job with exit code 3, no process left behind, nothing written outside the
output and work folders, and the whole process tree under 8 GB.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from beam_jobs.publish import read_table
from bench._procmem import TreeSampler
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.faults import read_leftovers, under_subreaper
from tests.support.phantoms import Phantom, make_phantom

STABLE = ("voxel_count", "volume_ml", "long_axis_mm", "short_axis_mm", "max_diameter_3d_mm", "mean_hu")


def _edit_ct(phantom: Phantom, edit: Callable[[pydicom.Dataset], None]) -> None:
    path = sorted(phantom.ct_dir.iterdir())[0]
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path, enforce_file_format=True)


def _edit_seg(phantom: Phantom, edit: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(phantom.seg_path)
    edit(ds)
    ds.save_as(phantom.seg_path, enforce_file_format=True)


def _huge_matrix(ds: pydicom.Dataset) -> None:
    ds.Rows = ds.Columns = 65535  # 8 GB of pixels claimed by a 8 kB slice


def _zero_slope(ds: pydicom.Dataset) -> None:
    ds.RescaleSlope = "0"


def _nan_position(ds: pydicom.Dataset) -> None:
    ds.ImagePositionPatient = ["nan", "0", "0"]


def _frame_bomb(ds: pydicom.Dataset) -> None:
    ds.NumberOfFrames = 2**31 - 1


def _stray_frame(ds: pydicom.Dataset) -> None:
    frames = ds.PerFrameFunctionalGroupsSequence
    frames[len(frames) // 2].DerivationImageSequence[0].SourceImageSequence[
        0
    ].ReferencedSOPInstanceUID = "1.2.3.999"


HOSTILE = {  # name: (edit CT or SEG, edit, stage, words of the message)
    "matrix": (_edit_ct, _huge_matrix, "decode", "65535"),
    "slope": (_edit_ct, _zero_slope, "decode", "RescaleSlope is 0"),
    "position": (_edit_ct, _nan_position, "decode", "ImagePositionPatient"),
    "frames": (_edit_seg, _frame_bomb, "reference", "NumberOfFrames 2147483647"),
    "stray": (_edit_seg, _stray_frame, "reference", "1.2.3.999"),
}


def _phantom(base: Path, name: str, seed: int) -> Phantom:
    return make_phantom(base / name, patient_id=name, seed=seed, shape_zyx=(20, 64, 64))


def _run(
    cohort: Path, out: Path, work: Path, leftovers: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The run, below a subreaper that lists in ``leftovers`` what of its own process tree outlived it."""
    command = [*LNQ, "run", "--cohort", str(cohort), "--output", str(out), "--work-dir", str(work)]
    proc = subprocess.Popen(
        under_subreaper([*command, "--workers", "2"], leftovers),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = TreeSampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate(timeout=300)
    peak = sampler.stop()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), peak.rss_sum_bytes


def _nodes(out: Path, uid: str) -> list[tuple]:
    rows = [r for r in read_table(str(out), "nodes").to_pylist() if r["ct_series_instance_uid"] == uid]
    return sorted(tuple(r[c] for c in ("source", "node_index", *STABLE)) for r in rows)


@pytest.mark.slow
def test_hostile_series_become_their_own_error_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    good = [_phantom(data, f"good{i}", 300 + i) for i in range(2)]
    hostile = {name: _phantom(data, name, 400 + i) for i, name in enumerate(HOSTILE)}
    for name, (edit_file, edit, _, _) in HOSTILE.items():
        edit_file(hostile[name], edit)
    every = [*good, *hostile.values()]
    cohort = data / "cohort.parquet"
    rows = [cohort_row(p, ct_url=str(p.ct_dir), seg_url=str(p.seg_path)) for p in every]
    write_cohort(cohort, rows)
    clean_cohort = data / "clean.parquet"
    write_cohort(clean_cohort, rows[:2])

    work = tmp_path / "work"
    work.mkdir()
    clean, _ = _run(clean_cohort, tmp_path / "clean", work, tmp_path / "clean-leftovers.json")
    assert clean.returncode == 0, clean.stderr[-2000:]
    leftovers = tmp_path / "leftovers.json"
    done, peak_bytes = _run(cohort, tmp_path / "out", work, leftovers)
    assert done.returncode == 3, done.stderr[-3000:]
    assert f"2 ok, {len(HOSTILE)} failed of {len(every)} series" in done.stdout

    out = tmp_path / "out"
    series = {r["ct_series_instance_uid"]: r for r in read_table(str(out), "series").to_pylist()}
    assert len(series) == len(every)
    errors = {e["ct_series_instance_uid"]: e for e in read_table(str(out), "errors").to_pylist()}
    for name, (_, _, stage, words) in HOSTILE.items():
        uid = hostile[name].series_uid
        assert series[uid]["status"] == "error", name
        assert errors[uid]["stage"] == stage, (name, errors[uid])
        assert words in errors[uid]["message"] and uid in errors[uid]["message"], (name, errors[uid])
    for p in good:  # the good series exactly as in a clean run
        assert series[p.series_uid]["status"] == "ok"
        assert _nodes(out, p.series_uid) == _nodes(tmp_path / "clean", p.series_uid) != []
    assert peak_bytes < 8e9, f"the run's process tree peaked at {peak_bytes / 1e9:.1f} GB"
    assert read_leftovers(leftovers) == []  # nothing of the run left running: no decoding child, no s5cmd
    assert list(work.iterdir()) == []  # the run's temporary folder is gone
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith("leftovers.json")) == [
        "clean",
        "data",
        "out",
        "work",
    ]

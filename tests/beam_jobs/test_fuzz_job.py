"""Fuzzing the whole job: corrupted headers and compressed pixels never crash, hang or lose a row.

Seeded and bounded: 15 corrupted series (bytes flipped in CT headers, SEG headers, and RLE,
JPEG 2000 and JPEG-LS pixel data) and one clean series go through one ``lnq run``. The job
must finish with exit code 0 or 3, with every cohort row in the series table exactly once,
each failure an error row at a known stage, and the clean series measured.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
from scipy import ndimage

from beam_jobs.publish import read_table
from pipeline.enums import Stage
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.fuzz import corrupt_ct_header, corrupt_ct_pixels, corrupt_seg_header
from tests.support.phantoms import make_phantom

SYNTAXES = {"rle": RLELossless, "j2k": JPEG2000Lossless, "jls": JPEGLSLossless}


@pytest.mark.slow
def test_a_fuzzed_cohort_finishes_with_every_row_accounted_for(tmp_path: Path) -> None:
    rows = []
    seed = 0
    for kind, target in [(k, "pixels") for k in SYNTAXES for _ in range(3)] + [
        ("rle", "ct_header"),
        ("rle", "ct_header"),
        ("rle", "seg_header"),
        ("rle", "seg_header"),
        ("rle", "seg_header"),
        ("rle", "clean"),
    ]:
        seed += 1
        phantom = make_phantom(
            tmp_path / f"src{seed}",
            patient_id=f"fuzz{seed}",
            seed=500 + seed,
            shape_zyx=(12, 48, 48),
            transfer_syntax=SYNTAXES[kind],
        )
        out = tmp_path / f"case{seed}"
        if target == "pixels":
            case = corrupt_ct_pixels(phantom.ct_dir, out, seed=seed, seg_path=str(phantom.seg_path))
        elif target == "ct_header":
            case = corrupt_ct_header(phantom.ct_dir, out, seed=seed, seg_path=str(phantom.seg_path))
        elif target == "seg_header":
            case = corrupt_seg_header(phantom.ct_dir, phantom.seg_path, out, seed=seed)
        if target == "clean":
            ct_url, seg_url = str(phantom.ct_dir), str(phantom.seg_path)
            clean_nodes = int(ndimage.label(phantom.mask, structure=np.ones((3, 3, 3)))[1])
        else:
            ct_url, seg_url = case.ct_dir, case.seg_path
        rows.append(cohort_row(phantom, ct_url=ct_url, seg_url=seg_url))
    cohort = tmp_path / "cohort.parquet"
    write_cohort(cohort, rows)
    done = subprocess.run(
        [
            *LNQ,
            "run",
            "--cohort",
            str(cohort),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode in (0, 3), done.stderr[-3000:]
    series = read_table(str(tmp_path / "o"), "series").to_pylist()
    assert sorted(s["ct_series_instance_uid"] for s in series) == sorted(
        r["ct_series_instance_uid"] for r in rows
    )
    errors = read_table(str(tmp_path / "o"), "errors").to_pylist()
    failed = {s["ct_series_instance_uid"] for s in series if s["status"] == "error"}
    assert {e["ct_series_instance_uid"] for e in errors} == failed
    known = {s.value for s in Stage}
    assert all(e["stage"] in known and e["message"] for e in errors)
    clean = next(s for s in series if s["patient_id"] == f"fuzz{seed}")
    assert clean["status"] == "ok" and clean["n_reference_nodes"] == clean_nodes > 0
    for s in series:  # an ok row is a measured row: no NaN has slipped into it
        if s["status"] == "ok":
            assert s["reference_volume_ml"] == s["reference_volume_ml"] and s["reference_volume_ml"] > 0

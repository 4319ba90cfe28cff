"""One case, as its isolated child exports it: the image is the CT in HU on its own grid, label 1 is
exactly the expert SEG's voxels, and image and labels share one grid. Phantoms in the layouts that
matter: plain, slices from head to feet ("z descending"), implicit VR, partial and full."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from pipeline.cohort.rows import validate_cohort_row
from pipeline.dicom.ct import decode_ct_series
from pipeline.enums import Stage
from pipeline.errors import ReferenceSegError
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.stage_clock import StageClock
from pipeline.training.export_case import export_case
from pipeline.training.nifti import read_nifti
from pipeline.training.settings import BACKGROUND, IGNORE, LYMPH_NODE, KnownBackground
from tests.support.cohort import cohort_row
from tests.support.phantoms import make_phantom

CASES = {
    "full": {"annotation": "full"},
    "partial": {"annotation": "partial"},
    "partial z descending": {"annotation": "partial", "z_descending": True},
    "full implicit VR": {"annotation": "full", "transfer_syntax": ImplicitVRLittleEndian},
}


@pytest.mark.parametrize("name", CASES, ids=list(CASES))
def test_image_is_the_ct_and_label_one_is_the_seg(name: str, tmp_path: Path) -> None:
    p = make_phantom(tmp_path / "p", seed=31, shape_zyx=(14, 48, 56), **CASES[name])
    row = validate_cohort_row(cohort_row(p, ct_url=str(p.ct_dir), seg_url=str(p.seg_path)))
    stages: list[Stage] = []
    clock = StageClock(announce=stages.append)
    work = tmp_path / "work"
    work.mkdir()
    made = export_case(
        report=clock, row=row, folder=str(work), fetch=FetchConfig(), background=KnownBackground()
    )
    clock.stop()
    assert stages == [Stage.FETCH, Stage.DECODE, Stage.REFERENCE, Stage.EXPORT]
    image, image_grid = read_nifti(made.image_path)
    labels, label_grid = read_nifti(made.label_path)
    decoded = decode_ct_series(str(p.ct_dir))

    np.testing.assert_array_equal(image, p.as_decoded(p.hu))  # HU, voxel for voxel
    assert image.dtype == decoded.hu.dtype == np.int16
    assert image_grid.grid_differences(decoded.geometry, tolerance=1e-5) == []
    assert image_grid.grid_differences(p.decoded_geometry, tolerance=1e-4) == []
    assert label_grid.grid_differences(image_grid, tolerance=0.0) == []  # one grid, bit for bit

    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels == LYMPH_NODE, p.as_decoded(p.mask))  # exactly the SEG
    present = set(np.unique(labels).tolist())
    if p.annotation == "partial":
        assert present == {BACKGROUND, LYMPH_NODE, IGNORE}
        assert (labels[image < -500] == BACKGROUND).all()  # air and lung are known background
    else:
        assert present == {BACKGROUND, LYMPH_NODE}
    assert made.partial == (p.annotation == "partial")
    assert (made.counts.lymph_node, made.counts.background, made.counts.ignore) == tuple(
        int((labels == v).sum()) for v in (LYMPH_NODE, BACKGROUND, IGNORE)
    )
    assert made.size_zyx == image.shape and made.spacing_mm == pytest.approx(p.spacing_mm)
    assert set(clock.seconds) == {Stage.DECODE, Stage.REFERENCE, Stage.FETCH, Stage.EXPORT}


def test_a_case_without_a_seg_is_refused(tmp_path: Path) -> None:
    p = make_phantom(tmp_path / "p", seed=32, shape_zyx=(6, 24, 24), write_seg=False)
    row = validate_cohort_row(cohort_row(p, ct_url=str(p.ct_dir), seg_url=None))
    with pytest.raises(ReferenceSegError, match="the cohort row has no reference SEG"):
        export_case(
            report=lambda _: None,
            row=row,
            folder=str(tmp_path),
            fetch=FetchConfig(),
            background=KnownBackground(),
        )

"""NIfTI on the CT's grid: the array and the LPS geometry survive SimpleITK's RAS file, and nibabel
(another reader) places the voxels at the same patient coordinates."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.geometry import Geometry
from pipeline.training.nifti import read_nifti, write_nifti

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

GRIDS = {
    "axial": Geometry((5, 7, 9), (-30.5, -20.25, -300.0), (0.8, 0.7, 2.5), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
    # rows to the patient's right, slices from head to feet (a "z-descending" series)
    "z descending": Geometry(
        (5, 7, 9), (30.5, -20.25, -290.0), (0.8, 0.7, 2.5), (-1, 0, 0, 0, 1, 0, 0, 0, -1)
    ),
    "oblique": Geometry(
        (5, 7, 9),
        (1.0, 2.0, 3.0),
        (0.8, 0.7, 2.5),
        tuple(np.linalg.qr(np.array([[1.0, 0.2, 0.1], [0.1, 1.0, 0.3], [0.0, 0.2, 1.0]]))[0].ravel()),
    ),
}


@pytest.mark.parametrize("grid", GRIDS, ids=list(GRIDS))
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_round_trip(grid: str, dtype: type, tmp_path: Path) -> None:
    geometry = GRIDS[grid]
    array = (np.arange(np.prod(geometry.size_zyx)) % 251).reshape(geometry.size_zyx).astype(dtype)
    path = str(tmp_path / "x.nii.gz")
    write_nifti(array, geometry, path)
    back, read = read_nifti(path)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    assert geometry.grid_differences(read, tolerance=1e-5) == []


@pytest.mark.parametrize("grid", GRIDS, ids=list(GRIDS))
def test_nibabel_finds_each_voxel_where_the_ct_has_it(grid: str, tmp_path: Path) -> None:
    geometry = GRIDS[grid]
    path = str(tmp_path / "x.nii.gz")
    write_nifti(np.zeros(geometry.size_zyx, dtype=np.uint8), geometry, path)
    image = nib.load(path)
    assert image.shape == tuple(reversed(geometry.size_zyx))  # nibabel's (x, y, z)
    corners = np.array([[0, 0, 0], [4, 6, 8], [2, 0, 5]])  # [z, y, x]
    ras = nib.affines.apply_affine(image.affine, corners[:, ::-1])
    np.testing.assert_allclose(ras @ LPS_TO_RAS, geometry.index_to_physical(corners), atol=1e-4)


def test_a_wrong_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"array shape \(5, 7, 8\) does not match the grid \(5, 7, 9\)"):
        write_nifti(np.zeros((5, 7, 8), np.uint8), GRIDS["axial"], str(tmp_path / "x.nii.gz"))

"""NIfTI files of a case, written with SimpleITK on the CT's own grid.

SimpleITK keeps the project's geometry (patient LPS mm, ``[z, y, x]`` arrays) and turns it into
NIfTI's RAS qform and sform itself; nnU-Net's ``SimpleITKIO`` reads the files back with the same
library, so the array it trains on is the array written here, axis for axis, and ``lnq run
--model nnunet:...`` hands it the CT in the same layout (``pipeline.models.nnunet``).

A ``.nii.gz`` is the ``.nii`` file gzipped. ITK gzips at a level of its own (a level asked for
through SimpleITK changed neither size nor time here), which took 8.7 s for a 512 x 512 x 556 CT;
SimpleITK writes the ``.nii`` and it is gzipped here at level 1 instead: 1.1 s + 4.7 s for a file
4% larger (``bench/export_speed.py``, 2 cores).
"""

from __future__ import annotations

import gzip
import os
import shutil

import numpy as np
import SimpleITK as sitk

from pipeline.geometry import Geometry

GZIP_LEVEL = 1
_COPY_BYTES = 8 << 20


def write_nifti(array: np.ndarray, geometry: Geometry, path: str) -> None:
    """Write the ``[z, y, x]`` ``array`` on ``geometry`` to ``path`` (``.nii.gz`` or ``.nii``),
    dtype kept. The gzip stream carries no time stamp: the same array gives the same bytes."""
    if tuple(array.shape) != tuple(geometry.size_zyx):
        raise ValueError(f"array shape {array.shape} does not match the grid {tuple(geometry.size_zyx)}")
    image = geometry.apply_to(sitk.GetImageFromArray(array))
    if not path.endswith(".gz"):
        sitk.WriteImage(image, path)
        return
    plain = f"{path[: -len('.gz')]}.tmp-{os.getpid()}.nii"
    try:
        sitk.WriteImage(image, plain)
        del image  # the copy SimpleITK made of the array
        with open(plain, "rb") as source, open(path, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as target:
                shutil.copyfileobj(source, target, _COPY_BYTES)
    finally:
        if os.path.exists(plain):
            os.remove(plain)


def read_nifti(path: str) -> tuple[np.ndarray, Geometry]:
    """The ``[z, y, x]`` array and geometry of a NIfTI file (for tests and checks)."""
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), Geometry.from_sitk(image)

"""NIfTI files of a case, written with SimpleITK on the CT's own grid.

SimpleITK keeps the project's geometry (patient LPS mm, ``[z, y, x]`` arrays) and turns it into
NIfTI's RAS qform and sform itself; nnU-Net's ``SimpleITKIO`` reads the files back with the same
library, so the array it trains on is the array written here, axis for axis, and ``lnq run
--model nnunet:...`` hands it the CT in the same layout (``pipeline.models.nnunet``).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from pipeline.dicom.volume import Geometry


def write_nifti(array: np.ndarray, geometry: Geometry, path: str) -> None:
    """Write the ``[z, y, x]`` ``array`` on ``geometry`` to ``path`` (``.nii.gz``), dtype kept."""
    if tuple(array.shape) != tuple(geometry.size_zyx):
        raise ValueError(f"array shape {array.shape} does not match the grid {tuple(geometry.size_zyx)}")
    image = geometry.apply_to(sitk.GetImageFromArray(array))
    # ITK's NIfTI writer gzips at its own level (a compression level hint changed neither the size
    # nor the time of a 512 x 512 x 108 CT here), about 1 s for that CT on one core
    sitk.WriteImage(image, path, useCompression=True)


def read_nifti(path: str) -> tuple[np.ndarray, Geometry]:
    """The ``[z, y, x]`` array and geometry of a NIfTI file (for tests and checks)."""
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), Geometry.from_sitk(image)

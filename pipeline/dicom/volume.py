"""The one geometry convention used everywhere in this project.

A volume is a numpy array indexed ``[z, y, x]`` (slice, row, column), the order
``SimpleITK.GetArrayFromImage`` returns. Geometry follows SimpleITK and DICOM:
patient coordinates are LPS in millimetres; ``origin_mm`` is the centre of voxel
``[0, 0, 0]``; ``spacing_mm`` is ``(x, y, z)`` = (column spacing, row spacing,
slice spacing); ``direction`` is the row-major 3x3 matrix whose *columns* are the
unit vectors of the x (along a row), y (down a column) and z (slice) axes.
Slices are stored in increasing position along the slice normal
``cross(x, y)``, so the z column of ``direction`` is that normal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True, eq=False)
class Geometry:
    """Where a ``[z, y, x]`` voxel grid sits in patient space (LPS, mm)."""

    size_zyx: tuple[int, int, int]
    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    def index_to_physical(self, index_zyx: np.ndarray) -> np.ndarray:
        """Patient LPS mm of (fractional) ``[z, y, x]`` indices, shape (N, 3)."""
        ijk = np.asarray(index_zyx, dtype=float)[..., ::-1]
        scaled = ijk * np.asarray(self.spacing_mm)
        return np.asarray(self.origin_mm) + scaled @ self.direction_matrix.T

    def reference_image(self) -> sitk.Image:
        """An empty SimpleITK image on this grid, for resampling onto it."""
        image = sitk.Image([int(s) for s in self.size_zyx[::-1]], sitk.sitkUInt8)
        self.apply_to(image)
        return image

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetOrigin(tuple(float(v) for v in self.origin_mm))
        image.SetSpacing(tuple(float(v) for v in self.spacing_mm))
        image.SetDirection(tuple(float(v) for v in self.direction))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        return cls(
            size_zyx=tuple(int(s) for s in image.GetSize()[::-1]),  # type: ignore[arg-type]
            origin_mm=tuple(image.GetOrigin()),  # type: ignore[arg-type]
            spacing_mm=tuple(image.GetSpacing()),  # type: ignore[arg-type]
            direction=tuple(image.GetDirection()),
        )


@dataclass(frozen=True, eq=False)
class CtVolume:
    """A decoded CT series: HU voxels ``[z, y, x]`` plus geometry and identity."""

    hu: np.ndarray
    geometry: Geometry
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    patient_id: str
    sop_instance_uids: tuple[str, ...]
    source_files: tuple[str, ...] = field(default=())

    def to_sitk(self) -> sitk.Image:
        """HU as a SimpleITK image with this volume's geometry."""
        return self.geometry.apply_to(sitk.GetImageFromArray(self.hu))


def mask_to_sitk(mask: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A ``[z, y, x]`` mask as a UInt8 SimpleITK image on ``geometry``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    return geometry.apply_to(image)

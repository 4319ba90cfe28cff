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

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:
    import pydicom

GRID_TOLERANCE = 1e-4
"""Two grids are one when origins and spacings agree within this many mm (and direction cosines
within this much): far below any voxel, far above float32 rounding of header values."""


def _rounded(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(float(v), 5) for v in values)


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

    def physical_to_index(self, points_mm: np.ndarray) -> np.ndarray:
        """Fractional ``[z, y, x]`` indices of patient LPS points, shape (N, 3): the inverse of
        :meth:`index_to_physical`."""
        points = np.atleast_2d(np.asarray(points_mm, dtype=float))
        relative = points - np.asarray(self.origin_mm)
        ijk = relative @ np.linalg.inv(self.direction_matrix).T / np.asarray(self.spacing_mm)
        return ijk[:, ::-1]

    def empty_image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        """A zero SimpleITK image on this grid (for resampling onto it, or to fill)."""
        image = sitk.Image([int(s) for s in self.size_zyx[::-1]], pixel_type)
        return self.apply_to(image)

    def grid_differences(self, other: Geometry, tolerance: float = GRID_TOLERANCE) -> list[str]:
        """How ``other`` differs from this grid (size exactly; origin, spacing in mm and
        direction cosines within ``tolerance``); empty when they are one grid."""
        problems = []
        if tuple(self.size_zyx) != tuple(other.size_zyx):
            problems.append(f"size [z, y, x] {tuple(self.size_zyx)} vs {tuple(other.size_zyx)}")
        for name, a, b in (
            ("origin mm", self.origin_mm, other.origin_mm),
            ("spacing mm", self.spacing_mm, other.spacing_mm),
            ("direction", self.direction, other.direction),
        ):
            if not np.allclose(a, b, rtol=0.0, atol=tolerance):
                problems.append(f"{name} {_rounded(a)} vs {_rounded(b)}")
        return problems

    def same_grid(self, other: Geometry, tolerance: float = GRID_TOLERANCE) -> bool:
        """True when ``other`` is this grid (see :meth:`grid_differences`)."""
        return not self.grid_differences(other, tolerance)

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetOrigin(tuple(float(v) for v in self.origin_mm))
        image.SetSpacing(tuple(float(v) for v in self.spacing_mm))
        image.SetDirection(tuple(float(v) for v in self.direction))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        return cls(
            size_zyx=int3(image.GetSize()[::-1]),
            origin_mm=float3(image.GetOrigin()),
            spacing_mm=float3(image.GetSpacing()),
            direction=tuple(float(v) for v in image.GetDirection()),
        )


def float3(values: Iterable[Any]) -> tuple[float, float, float]:
    """Exactly three floats (an origin, a spacing, a point), typed as such."""
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def int3(values: Iterable[Any]) -> tuple[int, int, int]:
    """Exactly three ints (a size or an index), typed as such."""
    a, b, c = (int(v) for v in values)
    return (a, b, c)


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
    # the decoder's headers (no pixel data), one per slice in slice order: what the SEG writer
    # references, so that it need not read every file again; empty when the volume was not decoded
    headers: tuple[pydicom.Dataset, ...] = field(default=(), repr=False)

    def to_sitk(self) -> sitk.Image:
        """HU as a SimpleITK image with this volume's geometry."""
        return self.geometry.apply_to(sitk.GetImageFromArray(self.hu))


def mask_to_sitk(mask: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A ``[z, y, x]`` mask as a UInt8 SimpleITK image on ``geometry``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    return geometry.apply_to(image)

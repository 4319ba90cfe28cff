"""Rasterised analytic shapes with known RECIST axes, for accuracy tests and the benchmark.

A voxel is inside when its centre is inside the shape. Errors are reported in
mm and in pixels, where a pixel is the larger in-plane spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.measure.recist import recist_axes, slice_axes


@dataclass(frozen=True)
class AxisError:
    long_mm: float
    short_mm: float
    pixel_mm: float

    @property
    def long_px(self) -> float:
        return self.long_mm / self.pixel_mm

    @property
    def short_px(self) -> float:
        return self.short_mm / self.pixel_mm


def rotated_ellipse(
    *,
    a_mm: float,
    b_mm: float,
    angle_rad: float,
    spacing_xy: tuple[float, float],
    center_offset_px: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """A ``[y, x]`` mask of an ellipse with semi-axes a >= b, rotated in plane."""
    sx, sy = spacing_xy
    half = int(np.ceil(a_mm / min(sx, sy))) + 4
    n = 2 * half + 1
    x = (np.arange(n) - half - center_offset_px[0]) * sx
    y = (np.arange(n) - half - center_offset_px[1]) * sy
    xx, yy = np.meshgrid(x, y)
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u = xx * c + yy * s
    v = -xx * s + yy * c
    return (u / a_mm) ** 2 + (v / b_mm) ** 2 <= 1.0


def ellipse_errors(count: int, *, seed: int, anisotropy: float = 1.5) -> list[AxisError]:
    """Measured minus true (2a, 2b) for random rotated ellipses at random anisotropic spacing."""
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(count):
        sx = rng.uniform(0.5, 1.0)
        sy = sx * rng.uniform(1.0, anisotropy) if rng.random() < 0.5 else sx / rng.uniform(1.0, anisotropy)
        a = rng.uniform(4.0, 20.0)
        b = rng.uniform(3.0, a)
        mask = rotated_ellipse(
            a_mm=a,
            b_mm=b,
            angle_rad=rng.uniform(0, np.pi),
            spacing_xy=(sx, sy),
            center_offset_px=(rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)),
        )
        long_mm, short_mm, _, _ = slice_axes(mask, (sx, sy))
        errors.append(AxisError(long_mm - 2 * a, short_mm - 2 * b, max(sx, sy)))
    return errors


def ellipsoid(
    *,
    semi_axes_mm: tuple[float, float, float],
    angle_rad: float,
    spacing_mm: tuple[float, float, float],
    center_offset_vox: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """A ``[z, y, x]`` ellipsoid mask rotated in plane, and the z (mm) of each slice from its centre."""
    a, b, c = semi_axes_mm
    sx, sy, sz = spacing_mm
    half = [int(np.ceil(max(a, b) / min(sx, sy))) + 3] * 2 + [int(np.ceil(c / sz)) + 3]
    x = (np.arange(2 * half[0] + 1) - half[0] - center_offset_vox[0]) * sx
    y = (np.arange(2 * half[1] + 1) - half[1] - center_offset_vox[1]) * sy
    z = (np.arange(2 * half[2] + 1) - half[2] - center_offset_vox[2]) * sz
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    cos, sin = np.cos(angle_rad), np.sin(angle_rad)
    u = xx * cos + yy * sin
    v = -xx * sin + yy * cos
    return (u / a) ** 2 + (v / b) ** 2 + (zz / c) ** 2 <= 1.0, z


def ellipsoid_errors(count: int, *, seed: int) -> list[AxisError]:
    """Measured minus analytic axes of the cross-section on the slice the method chose."""
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(count):
        sx = rng.uniform(0.6, 0.9)
        spacing = (sx, sx * rng.uniform(1.0, 1.3), rng.choice([1.0, 2.5, 5.0]))
        a = rng.uniform(5.0, 15.0)
        b = rng.uniform(4.0, a)
        c = rng.uniform(5.0, 15.0)
        mask, z = ellipsoid(
            semi_axes_mm=(a, b, c),
            angle_rad=rng.uniform(0, np.pi),
            spacing_mm=spacing,
            center_offset_vox=tuple(rng.uniform(-0.5, 0.5, 3)),
        )
        axes = recist_axes(mask, spacing)
        f = np.sqrt(max(0.0, 1.0 - (z[axes.slice_index] / c) ** 2))
        errors.append(
            AxisError(
                axes.long_axis_mm - 2 * a * f, axes.short_axis_mm - 2 * b * f, max(spacing[0], spacing[1])
            )
        )
    return errors


def summary(errors: list[AxisError]) -> dict[str, float]:
    """Worst and mean absolute error, in mm and pixels, for both axes."""
    out = {}
    for axis in ("long", "short"):
        mm = np.abs([getattr(e, f"{axis}_mm") for e in errors])
        px = np.abs([getattr(e, f"{axis}_px") for e in errors])
        out.update(
            {
                f"{axis}_worst_mm": float(mm.max()),
                f"{axis}_mean_mm": float(mm.mean()),
                f"{axis}_worst_px": float(px.max()),
                f"{axis}_mean_px": float(px.mean()),
            }
        )
    return out

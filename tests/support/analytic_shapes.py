"""Rasterised analytic shapes with known RECIST axes, for accuracy tests and the benchmark.

A voxel is inside when its centre is inside the shape. Errors are reported in
mm and in pixels, where a pixel is the larger in-plane spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.measure.diameter3d import max_diameter_3d
from pipeline.measure.recist import recist_axes


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
        axes = recist_axes(mask[None], (sx, sy, 1.0))
        errors.append(AxisError(axes.long_axis_mm - 2 * a, axes.short_axis_mm - 2 * b, max(sx, sy)))
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


@dataclass(frozen=True)
class DiameterError:
    """Measured minus true largest 3D diameter (2 x the longest semi-axis), with the grid."""

    error_mm: float
    slice_mm: float
    pixel_mm: float
    longest_along_z: bool


def diameter_errors(count: int, *, seed: int) -> list[DiameterError]:
    """3D diameter errors on ellipsoids sampled as :func:`ellipsoid_errors` samples them (the
    longest semi-axis in plane or along z)."""
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(count):
        sx = rng.uniform(0.6, 0.9)
        spacing = (sx, sx * rng.uniform(1.0, 1.3), float(rng.choice([1.0, 2.5, 5.0])))
        a = rng.uniform(5.0, 15.0)
        b = rng.uniform(4.0, a)
        c = rng.uniform(5.0, 15.0)
        mask, _ = ellipsoid(
            semi_axes_mm=(a, b, c),
            angle_rad=rng.uniform(0, np.pi),
            spacing_mm=spacing,
            center_offset_vox=tuple(rng.uniform(-0.5, 0.5, 3)),
        )
        measured = max_diameter_3d(mask, spacing)
        errors.append(DiameterError(measured - 2 * max(a, c), spacing[2], max(spacing[0], spacing[1]), c > a))
    return errors


def diameter_summary(errors: list[DiameterError]) -> dict[str, float]:
    """Worst and mean (signed and absolute) 3D diameter error in mm, and the worst in slices
    (the error over the slice spacing), overall and per slice spacing."""
    out: dict[str, float] = {}
    for name, group in [("all", errors)] + [
        (f"slice_{sz:g}mm", [e for e in errors if e.slice_mm == sz])
        for sz in sorted({e.slice_mm for e in errors})
    ]:
        mm = np.array([e.error_mm for e in group])
        out.update(
            {
                f"{name}_worst_mm": float(np.abs(mm).max()),
                f"{name}_mean_mm": float(mm.mean()),
                f"{name}_mean_abs_mm": float(np.abs(mm).mean()),
                f"{name}_worst_slices": float(max(abs(e.error_mm) / e.slice_mm for e in group)),
            }
        )
    return out


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


def staircase_distance_mm(
    mask2d: np.ndarray, spacing_xy: tuple[float, float], point_xy_mm: np.ndarray
) -> float:
    """Distance in mm from an in-slice (x, y) mm point (pixel ``[0, 0]`` at the origin) to the
    pixel-edge boundary of a ``[y, x]`` mask: the unit edges between 4-adjacent inside and
    outside pixels, half way between their centres."""
    sx, sy = spacing_xy
    padded = np.pad(mask2d.astype(bool), 1)
    segments = []
    # vertical edges between (r, c) and (r, c + 1); horizontal ones between (r, c) and (r + 1, c)
    for r, c in np.argwhere(padded[:, :-1] != padded[:, 1:]):
        x, y = c - 1 + 0.5, r - 1
        segments.append(((x, y - 0.5), (x, y + 0.5)))
    for r, c in np.argwhere(padded[:-1, :] != padded[1:, :]):
        x, y = c - 1, r - 1 + 0.5
        segments.append(((x - 0.5, y), (x + 0.5, y)))
    seg = np.asarray(segments, dtype=float) * np.array([sx, sy])
    a, b = seg[:, 0, :], seg[:, 1, :]
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", np.asarray(point_xy_mm) - a, ab) / np.einsum("ij,ij->i", ab, ab), 0, 1)
    closest = a + t[:, None] * ab
    return float(np.min(np.linalg.norm(closest - np.asarray(point_xy_mm), axis=1)))


def random_nodes(
    shape_zyx: tuple[int, int, int], count: int, *, seed: int, max_semi_px: float = 6.0
) -> np.ndarray:
    """A ``[z, y, x]`` mask with about ``count`` separate random nodes: single voxels, specks of a
    few voxels (diagonal contacts and saddles included), bars, and irregular ellipsoids with
    holes, each in its own cell of a grid so that none touch."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape_zyx, dtype=bool)
    cell = np.array([max(3, shape_zyx[0] // 4), int(2 * max_semi_px) + 4, int(2 * max_semi_px) + 4])
    grid = np.asarray(shape_zyx) // cell
    cells = [(i, j, k) for i in range(grid[0]) for j in range(grid[1]) for k in range(grid[2])]
    for index in rng.permutation(len(cells))[:count]:
        origin = np.asarray(cells[index]) * cell + 1
        room = cell - 2
        kind = rng.integers(4)
        if kind == 0:  # a single voxel
            shape = np.ones((1, 1, 1), bool)
        elif kind == 1:  # a speck: random voxels in a small box (corner contacts, saddles)
            shape = rng.random((int(rng.integers(1, 3)), 3, 3)) < 0.5
        elif kind == 2:  # a bar, axis-aligned or diagonal
            n = int(rng.integers(2, room[1]))
            shape = np.zeros((1, n, n), bool)
            if rng.random() < 0.5:
                shape[0, 0, :] = True
            else:
                shape[0, np.arange(n), np.arange(n)] = True
        else:  # an irregular ellipsoid
            semi = rng.uniform(0.6, [room[0] / 2, max_semi_px, max_semi_px])
            half = np.ceil(semi).astype(int)
            z, y, x = np.mgrid[-half[0] : half[0] + 1, -half[1] : half[1] + 1, -half[2] : half[2] + 1]
            a = rng.uniform(0, np.pi)
            u, v = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
            shape = (u / semi[2]) ** 2 + (v / semi[1]) ** 2 + (z / semi[0]) ** 2 <= 1.0
            shape &= rng.random(shape.shape) < 0.85
        shape = shape[: room[0], : room[1], : room[2]]
        if not shape.any():
            shape = np.ones((1, 1, 1), bool)
        box = tuple(slice(int(o), int(o) + s) for o, s in zip(origin, shape.shape, strict=True))
        mask[box] |= shape
    return mask

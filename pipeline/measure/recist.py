"""RECIST long and short axes of one node, measured on its sub-pixel boundary.

On each slice the node's cross-section boundary is the 0.5 iso-contour
(marching squares, scikit-image) of its mask after a Gaussian of 0.5 pixel,
which places the boundary between inside and outside pixel centres instead of
on them. The long axis is the largest distance between two boundary points
(the Feret diameter, from the convex hull); it is measured on every slice and
the slice where it is longest is kept. The short axis is the longest chord
perpendicular to the long axis on that slice: for lines perpendicular to the
long axis, the distance between the outermost boundary crossings, at its
maximum. Points are in millimetres on the slice plane (column x spacing, row x
spacing), so anisotropic pixels are handled exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours

BOUNDARY_SMOOTHING_PX = 0.5


@dataclass(frozen=True)
class AxialAxes:
    """RECIST axes of one node; ``slice_index`` is the z index of the measured slice."""

    long_axis_mm: float
    short_axis_mm: float
    slice_index: int
    long_axis_endpoints_mm: tuple[tuple[float, float], tuple[float, float]]


def smoothed_for_contour(padded: np.ndarray) -> np.ndarray:
    """The mask blurred by 0.5 pixel, unless that would erase it (a lone voxel in 3D)."""
    smoothed = ndimage.gaussian_filter(padded, BOUNDARY_SMOOTHING_PX, mode="constant")
    return smoothed if smoothed.max() > 0.5 else padded


def boundary_polygons(mask2d: np.ndarray, spacing_xy_mm: tuple[float, float]) -> list[np.ndarray]:
    """Closed sub-pixel boundary polygons of a 2D ``[y, x]`` mask, as (N, 2) arrays of (x, y) mm."""
    padded = smoothed_for_contour(np.pad(mask2d.astype(np.float64), 2))
    sx, sy = spacing_xy_mm
    return [
        np.column_stack([(c[:, 1] - 2) * sx, (c[:, 0] - 2) * sy])
        for c in find_contours(padded, 0.5)
        if len(c) >= 2
    ]


def feret_diameter(points: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Largest distance between two of ``points`` (N, D), with the two points."""
    candidates = points
    if len(points) > 3:
        try:
            candidates = points[ConvexHull(points).vertices]
        except QhullError:  # collinear or degenerate: every point is a candidate
            candidates = points
    diff = candidates[:, None, :] - candidates[None, :, :]
    dist = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(dist[i, j]), candidates[i], candidates[j]


def perpendicular_chord(polygons: list[np.ndarray], direction: np.ndarray) -> float:
    """Longest chord of the polygons perpendicular to unit ``direction`` (outermost crossings).

    Along the direction, the chord length is piecewise linear between vertex
    projections, so its maximum is found exactly by evaluating it at each one
    (all at once, in blocks that bound memory on long contours).
    """
    u = np.asarray(direction, dtype=float)
    v = np.array([-u[1], u[0]])
    starts = np.concatenate(list(polygons))
    ends = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    a_u, b_u, a_v, b_v = starts @ u, ends @ u, starts @ v, ends @ v
    lo, hi = np.minimum(a_u, b_u), np.maximum(a_u, b_u)
    du = b_u - a_u
    flat = np.abs(du) < 1e-12
    safe_du = np.where(flat, 1.0, du)
    best = 0.0
    positions = np.unique(a_u)
    block = max(1, 2_000_000 // max(len(a_u), 1))
    for first in range(0, len(positions), block):
        t = positions[first : first + block, None]  # (T, 1) against (E,) edges
        hit = (lo <= t) & (hi >= t)
        frac = np.where(flat, 0.0, (t - a_u) / safe_du)
        crossing = a_v + frac * (b_v - a_v)
        # an edge lying on the line contributes both of its ends
        top = np.maximum(np.where(hit, crossing, -np.inf), np.where(hit & flat, b_v, -np.inf)).max(axis=1)
        bottom = np.minimum(np.where(hit, crossing, np.inf), np.where(hit & flat, b_v, np.inf)).min(axis=1)
        valid = np.isfinite(top)
        if np.any(valid):
            best = max(best, float(np.max(top[valid] - bottom[valid])))
    return best


def _long_axis(
    mask2d: np.ndarray, spacing_xy_mm: tuple[float, float]
) -> tuple[float, np.ndarray, np.ndarray, list[np.ndarray]]:
    polygons = boundary_polygons(mask2d, spacing_xy_mm)
    if not polygons:
        zero = np.zeros(2)
        return 0.0, zero, zero, polygons
    long_mm, p, q = feret_diameter(np.concatenate(polygons))
    return long_mm, p, q, polygons


def _short_axis(polygons: list[np.ndarray], long_mm: float, p: np.ndarray, q: np.ndarray) -> float:
    return perpendicular_chord(polygons, (q - p) / long_mm) if long_mm > 0.0 else 0.0


def slice_axes(
    mask2d: np.ndarray, spacing_xy_mm: tuple[float, float]
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(long, short, long-axis end points) of one cross-section; zeros when it is empty."""
    long_mm, p, q, polygons = _long_axis(mask2d, spacing_xy_mm)
    return long_mm, _short_axis(polygons, long_mm, p, q), p, q


def recist_axes(node_zyx: np.ndarray, spacing_mm: tuple[float, float, float]) -> AxialAxes:
    """RECIST axes of a node mask ``[z, y, x]`` with spacing ``(x, y, z)`` mm.

    The slice with the longest long axis is measured; among equally long ones,
    the one with the longer short axis, then the lower index. Short axes are only
    computed on those candidate slices.
    """
    spacing_xy = (float(spacing_mm[0]), float(spacing_mm[1]))
    per_slice = [
        (int(k), *_long_axis(node_zyx[k], spacing_xy)) for k in np.flatnonzero(node_zyx.any(axis=(1, 2)))
    ]
    if not per_slice:
        raise ValueError("the node mask is empty")
    longest = max(entry[1] for entry in per_slice)
    best: AxialAxes | None = None
    for k, long_mm, p, q, polygons in per_slice:
        if long_mm != longest:
            continue
        short_mm = _short_axis(polygons, long_mm, p, q)
        if best is None or short_mm > best.short_axis_mm:
            best = AxialAxes(
                long_axis_mm=long_mm,
                short_axis_mm=short_mm,
                slice_index=k,
                long_axis_endpoints_mm=((float(p[0]), float(p[1])), (float(q[0]), float(q[1]))),
            )
    assert best is not None
    return best

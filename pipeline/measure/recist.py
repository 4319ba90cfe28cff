"""RECIST long and short axes of one node, measured on its sub-pixel boundary.

On each slice the node's cross-section boundary is the 0.5 iso-contour of its
mask after a Gaussian of 0.5 pixel (:mod:`pipeline.measure.boundary`), which
places the boundary between inside and outside pixel centres instead of on
them. The long axis is the largest distance between two boundary points (the
Feret diameter, :mod:`pipeline.measure.feret`); it is measured on every slice
and the slice where it is longest is kept. The short axis is the longest chord
perpendicular to the long axis on that slice: for lines perpendicular to the
long axis, the distance between the outermost boundary crossings, at its
maximum. Points are in millimetres on the slice plane (column x spacing, row x
spacing), so anisotropic pixels are handled exactly.

Ties never depend on the order in which points were found. When several long
axes are equally long (two pairs of boundary points equally far apart on one
slice, or equal long axes on several slices), the one with the longer short
axis is measured, then the one on the lower slice, then the first pair in the
canonical (x, then y) order of the vertices; the short axis is the first of the
equally long chords along the long axis.

Many nodes are measured at once by :mod:`pipeline.measure.batch`;
:func:`recist_axes` measures one mask the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.measure.batch import NodeVoxels, measure_boundaries


@dataclass(frozen=True)
class AxialAxes:
    """RECIST axes of one node; ``slice_index`` is the z index of the measured slice.

    End points are (x, y) mm on that slice, relative to the centre of the mask's
    pixel ``[0, 0]``; they lie on the sub-pixel boundary and are
    ``long_axis_mm`` and ``short_axis_mm`` apart.
    """

    long_axis_mm: float
    short_axis_mm: float
    slice_index: int
    long_axis_endpoints_mm: tuple[tuple[float, float], tuple[float, float]]
    short_axis_endpoints_mm: tuple[tuple[float, float], tuple[float, float]]


def _pair(ends: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    return ((float(ends[0, 0]), float(ends[0, 1])), (float(ends[1, 0]), float(ends[1, 1])))


def recist_axes(node_zyx: np.ndarray, spacing_mm: tuple[float, float, float]) -> AxialAxes:
    """RECIST axes of a node mask ``[z, y, x]`` with spacing ``(x, y, z)`` mm."""
    measured = measure_boundaries(NodeVoxels.from_mask(node_zyx), spacing_mm)
    return AxialAxes(
        long_axis_mm=float(measured.long_axis_mm[0]),
        short_axis_mm=float(measured.short_axis_mm[0]),
        slice_index=int(measured.slice_index[0]),
        long_axis_endpoints_mm=_pair(measured.long_axis_endpoints_mm[0]),
        short_axis_endpoints_mm=_pair(measured.short_axis_endpoints_mm[0]),
    )

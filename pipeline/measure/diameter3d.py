"""Largest 3D diameter of a node, on the same boundary as its RECIST axes.

The node's surface is modelled by its per-slice RECIST boundaries (see
:mod:`pipeline.measure.boundary`) placed at their slice positions and joined
between consecutive slices, closed at the top and the bottom by a pole: a point
half a slice beyond the end slice, over the centre of its boundary (a cone over
the end slice). Half a slice, because that is where the in-plane boundary sits
between the last inside and the first outside pixel centre; a pole rather than
the end slice's whole boundary moved outwards (a flat lid), because the
in-plane boundary does not keep corners either (the 0.5-pixel Gaussian rounds
them), and a flat lid's rim adds a diagonal that overstates rounded nodes: on
ellipsoids at 5 mm slices the flat lid read +1.2 to +3.0 mm too long on
average, the pole 0.0 to +0.8 mm. The diameter is the Feret diameter of that
surface: the largest distance between two of its vertices (over the convex
hull's vertices when there are many).

Every slice's boundary is part of the surface and the long axis's two end
points are always compared, so the 3D diameter is never shorter than the long
axis, bit for bit. (It was before: the surface was marching cubes on a mask
blurred in 3D, and blurring along z shrank thin nodes below their long axis.)
"""

from __future__ import annotations

import numpy as np

from pipeline.measure.batch import NodeVoxels, measure_boundaries, slice_means
from pipeline.measure.boundary import SliceBoundaries


def surface_points(boundaries: SliceBoundaries, slice_spacing_mm: float) -> np.ndarray:
    """(N, 3) points (x, y, z) mm of one node's surface: every slice's boundary vertices at
    ``z = k * spacing`` (the first ``len(vertices_mm)`` rows, in their order), then the two
    poles: half a slice below the lowest non-empty slice and half a slice above the highest,
    over the mean of that slice's boundary vertices."""
    sz = float(slice_spacing_mm)
    vertices = boundaries.vertices_mm
    starts = boundaries.vertex_starts
    counts = np.diff(starts)
    k = np.repeat(np.arange(boundaries.n_slices), counts)
    filled = np.flatnonzero(counts)
    low, high = int(filled[0]), int(filled[-1])
    poles = slice_means(vertices, starts[[low, high]], starts[[low + 1, high + 1]])
    return np.concatenate(
        [
            np.column_stack([vertices, k * sz]),
            np.column_stack([poles, [(low - 0.5) * sz, (high + 0.5) * sz]]),
        ]
    )


def max_diameter_3d(node_zyx: np.ndarray, spacing_mm: tuple[float, float, float]) -> float:
    """Largest boundary-to-boundary distance in mm of a ``[z, y, x]`` mask (spacing ``(x, y, z)``)."""
    return float(measure_boundaries(NodeVoxels.from_mask(node_zyx), spacing_mm).max_diameter_3d_mm[0])

"""Largest 3D diameter of a node: the Feret diameter of its sub-voxel surface.

The surface is the 0.5 iso-surface (marching cubes, scikit-image) of the node
mask after a Gaussian of 0.5 voxel, in millimetres with the voxel spacing; the
diameter is the largest distance between two of its convex hull's vertices.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import marching_cubes

from pipeline.measure.recist import feret_diameter, smoothed_for_contour


def max_diameter_3d(node_zyx: np.ndarray, spacing_mm: tuple[float, float, float]) -> float:
    """Largest boundary-to-boundary distance in mm of a ``[z, y, x]`` mask (spacing ``(x, y, z)``)."""
    if not node_zyx.any():
        raise ValueError("the node mask is empty")
    padded = smoothed_for_contour(np.pad(node_zyx.astype(np.float64), 2))
    spacing_zyx = (float(spacing_mm[2]), float(spacing_mm[1]), float(spacing_mm[0]))
    vertices, _, _, _ = marching_cubes(padded, level=0.5, spacing=spacing_zyx)
    diameter, _, _ = feret_diameter(vertices)
    return diameter

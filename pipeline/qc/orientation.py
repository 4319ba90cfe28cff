"""Where a displayed voxel plane points in the patient: LPS points to indices, and the letters
radiologists expect at the edges of an image (derived from the grid's direction, never assumed)."""

from __future__ import annotations

import numpy as np

from pipeline.geometry import Geometry

_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
"""Patient LPS axes: letter for the negative and the positive direction."""

SECONDARY_COMPONENT = 0.25
"""An oblique direction also names its second axis when that cosine is at least this large."""


def physical_to_index(geometry: Geometry, points_mm: np.ndarray) -> np.ndarray:
    """Fractional ``[z, y, x]`` indices of patient LPS points, shape (N, 3): the inverse of
    :meth:`Geometry.index_to_physical`."""
    return geometry.physical_to_index(points_mm)


def direction_letters(vector: np.ndarray) -> str:
    """Letters naming where ``vector`` (LPS) points: 'L', 'A', or 'LA' for an oblique one."""
    v = np.asarray(vector, dtype=float)
    order = np.argsort(-np.abs(v), kind="stable")
    letters = []
    for rank, axis in enumerate(order[:2]):
        if rank == 1 and abs(v[axis]) < SECONDARY_COMPONENT:
            break
        letters.append(_LETTERS[axis][int(v[axis] > 0)])
    return "".join(letters)


def screen_letters(right_lps: np.ndarray, down_lps: np.ndarray) -> dict[str, str]:
    """Letters for the four edges of an image whose columns run along ``right_lps`` and rows
    along ``down_lps`` (both LPS unit vectors)."""
    right = np.asarray(right_lps, dtype=float)
    down = np.asarray(down_lps, dtype=float)
    return {
        "left": direction_letters(-right),
        "right": direction_letters(right),
        "top": direction_letters(-down),
        "bottom": direction_letters(down),
    }

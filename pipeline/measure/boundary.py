"""The sub-pixel boundary of a node on each of its axial slices.

On each slice the boundary is the 0.5 iso-contour of the node's mask after a
Gaussian of 0.5 pixel (in plane only; slices are never mixed), found by
marching squares exactly as ``skimage.measure.find_contours(image, 0.5)``
finds it (same vertices to the last bit, same edges, saddles resolved the same
way: inside pixels that touch only at a corner are kept apart by the contour).
The smoothing places the boundary between inside and outside pixel centres
instead of on them (half way on a straight edge).

All slices of a stack are contoured at once, in numpy: a vertex lies on each
pixel-grid edge whose two ends are on either side of 0.5, and each grid cell
joins the vertices on its edges by one or two edges. The contours are never
chained into polygons: the measurements need only the vertices and the edges.

Coordinates are millimetres on the slice plane relative to the centre of the
stack's pixel ``[0, 0]``: ``x = column * column spacing``, ``y = row * row spacing``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOUNDARY_SMOOTHING_PX = 0.5
LEVEL = 0.5
PAD_PX = 2  # the Gaussian (truncated at 4 sigma) reaches 2 pixels: padding keeps it whole
CHUNK_CELLS = 4_000_000  # slices are contoured in chunks of about this many padded pixels


@dataclass(frozen=True)
class SliceBoundaries:
    """Boundary vertices and edges of every slice of a ``[z, y, x]`` stack.

    ``vertices_mm`` (V, 2) holds (x, y) mm, grouped by slice and, within a slice,
    sorted by x then y (a canonical order: results never depend on traversal
    order); slice ``k`` owns rows ``vertex_starts[k]:vertex_starts[k + 1]``.
    ``edges`` (E, 2) are pairs of rows of ``vertices_mm``, grouped by slice the
    same way (``edge_starts``).
    """

    vertices_mm: np.ndarray
    vertex_starts: np.ndarray
    edges: np.ndarray
    edge_starts: np.ndarray

    @property
    def n_slices(self) -> int:
        return len(self.vertex_starts) - 1

    def slice_vertices(self, k: int) -> np.ndarray:
        return self.vertices_mm[self.vertex_starts[k] : self.vertex_starts[k + 1]]

    def slice_edges(self, k: int) -> np.ndarray:
        """Edges of slice ``k`` as (E, 2, 2): start and end (x, y) mm of each edge."""
        return self.vertices_mm[self.edges[self.edge_starts[k] : self.edge_starts[k + 1]]]


def padded_slices(stack_zyx: np.ndarray) -> np.ndarray:
    """The stack as float64, padded by 2 pixels in plane (what :func:`smooth_slices` expects)."""
    nz, ny, nx = stack_zyx.shape
    padded = np.zeros((nz, ny + 2 * PAD_PX, nx + 2 * PAD_PX))
    padded[:, PAD_PX : PAD_PX + ny, PAD_PX : PAD_PX + nx] = stack_zyx
    return padded


def smooth_slices(padded: np.ndarray) -> np.ndarray:
    """Each slice of a padded stack blurred by 0.5 pixel in plane, unless that would erase it
    (never for a non-empty 2D slice; kept as the rule)."""
    from scipy import ndimage  # here, not at the top: the job's launcher imports this module

    smoothed = ndimage.gaussian_filter(
        padded, (0.0, BOUNDARY_SMOOTHING_PX, BOUNDARY_SMOOTHING_PX), mode="constant"
    )
    erased = smoothed.max(axis=(1, 2)) <= LEVEL
    if erased.any():
        smoothed[erased] = padded[erased]
    return smoothed


def slice_boundaries(stack_zyx: np.ndarray, spacing_xy_mm: tuple[float, float]) -> SliceBoundaries:
    """Sub-pixel boundaries of every slice of a ``[z, y, x]`` mask (spacing ``(x, y)`` mm)."""
    return padded_slice_boundaries(padded_slices(stack_zyx), spacing_xy_mm)


def padded_slice_boundaries(padded: np.ndarray, spacing_xy_mm: tuple[float, float]) -> SliceBoundaries:
    """:func:`slice_boundaries` of a stack already padded by :func:`padded_slices` (or with more
    background beyond the padding, which changes nothing), in chunks of slices that bound memory."""
    nz, ny, nx = padded.shape
    per_chunk = max(1, CHUNK_CELLS // max(1, ny * nx))
    parts = [
        _contour(smooth_slices(padded[z0 : z0 + per_chunk]), spacing_xy_mm) for z0 in range(0, nz, per_chunk)
    ]
    return concatenate_boundaries(parts)


def concatenate_boundaries(parts: list[SliceBoundaries]) -> SliceBoundaries:
    """The slices of several :class:`SliceBoundaries`, one after the other."""
    if len(parts) == 1:
        return parts[0]
    vertices, edges = [], []
    vertex_starts, edge_starts = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
    v_offset = e_offset = 0
    for part in parts:
        vertices.append(part.vertices_mm)
        edges.append(part.edges + v_offset)
        vertex_starts.append(part.vertex_starts[1:] + v_offset)
        edge_starts.append(part.edge_starts[1:] + e_offset)
        v_offset += len(part.vertices_mm)
        e_offset += len(part.edges)
    return SliceBoundaries(
        vertices_mm=np.concatenate(vertices),
        vertex_starts=np.concatenate(vertex_starts),
        edges=np.concatenate(edges),
        edge_starts=np.concatenate(edge_starts),
    )


def _fraction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where 0.5 lies between the values ``a`` (at 0) and ``b`` (at 1): scikit-image's formula."""
    return (LEVEL - a) / (b - a)


# The edges joined in a grid cell, by its case: 1 (upper left above 0.5) + 2 (upper right)
# + 4 (lower left) + 8 (lower right). Cell edges: 0 top, 1 right, 2 bottom, 3 left. In the
# saddles 6 and 9, the two corners above 0.5 are cut off separately (fully_connected='low').
_FIRST_SEGMENT = np.array(
    [
        [-1, -1],
        [0, 3],
        [0, 1],
        [3, 1],
        [3, 2],
        [0, 2],
        [0, 1],
        [1, 2],
        [1, 2],
        [0, 3],
        [0, 2],
        [3, 2],
        [3, 1],
        [0, 1],
        [0, 3],
        [-1, -1],
    ]
)
_SECOND_SEGMENT = {6: (3, 2), 9: (2, 1)}


def _contour(smoothed: np.ndarray, spacing_xy_mm: tuple[float, float]) -> SliceBoundaries:
    nz, ny, nx = smoothed.shape
    sx, sy = float(spacing_xy_mm[0]), float(spacing_xy_mm[1])
    above = smoothed > LEVEL
    # a vertex on each horizontal grid edge (k, r, c)-(k, r, c + 1) and each vertical one
    # (k, r, c)-(k, r + 1, c) whose ends lie on either side of the level
    hk, hr, hc = np.nonzero(above[:, :, :-1] != above[:, :, 1:])
    vk, vr, vc = np.nonzero(above[:, :-1, :] != above[:, 1:, :])
    h_col = hc + _fraction(smoothed[hk, hr, hc], smoothed[hk, hr, hc + 1])
    v_row = vr + _fraction(smoothed[vk, vr, vc], smoothed[vk, vr + 1, vc])
    x = np.concatenate([(h_col - PAD_PX) * sx, (vc - PAD_PX) * sx])
    y = np.concatenate([(hr - PAD_PX) * sy, (v_row - PAD_PX) * sy])
    k = np.concatenate([hk, vk])
    n_h = len(hk)
    # cells the boundary crosses, and which of their edges it joins
    bits = above.view(np.uint8)
    case = bits[:, :-1, :-1] | (bits[:, :-1, 1:] << 1) | (bits[:, 1:, :-1] << 2) | (bits[:, 1:, 1:] << 3)
    ck, cr, cc = np.nonzero((case - np.uint8(1)) < 14)  # neither 0 nor 15
    cell_case = case[ck, cr, cc]
    # vertex ids of the four edges of each crossed cell (raster keys, found by bisection)
    h_key = (hk * ny + hr) * (nx - 1) + hc
    v_key = (vk * (ny - 1) + vr) * nx + vc
    edge_keys = (
        (ck * ny + cr) * (nx - 1) + cc,  # top
        (ck * (ny - 1) + cr) * nx + cc + 1,  # right
        (ck * ny + cr + 1) * (nx - 1) + cc,  # bottom
        (ck * (ny - 1) + cr) * nx + cc,  # left
    )
    sorted_keys = (h_key, v_key, h_key, v_key)
    base = (0, n_h, 0, n_h)
    ids = np.stack(
        [
            np.minimum(np.searchsorted(keys, key), max(len(keys) - 1, 0)) + b
            for keys, key, b in zip(sorted_keys, edge_keys, base, strict=True)
        ],
        axis=1,
    )
    cells = np.arange(len(ck))
    first = _FIRST_SEGMENT[cell_case]
    edges_first = np.column_stack([ids[cells, first[:, 0]], ids[cells, first[:, 1]]])
    saddle_parts = []
    saddle_slices = []
    for saddle, (e0, e1) in _SECOND_SEGMENT.items():
        where = np.flatnonzero(cell_case == saddle)
        saddle_parts.append(np.column_stack([ids[where, e0], ids[where, e1]]))
        saddle_slices.append(ck[where])
    edges = np.concatenate([edges_first, *saddle_parts])
    edge_slice = np.concatenate([ck, *saddle_slices])
    # canonical vertex order: by slice, then x, then y
    order = np.lexsort((y, x, k))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    edges = rank[edges]
    edge_order = np.argsort(edge_slice, kind="stable")
    return SliceBoundaries(
        vertices_mm=np.column_stack([x[order], y[order]]),
        vertex_starts=np.searchsorted(k[order], np.arange(nz + 1)),
        edges=edges[edge_order],
        edge_starts=np.searchsorted(edge_slice[edge_order], np.arange(nz + 1)),
    )

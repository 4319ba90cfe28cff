"""RECIST axes and 3D diameters of many nodes at once.

Every slice of every node is contoured in a few numpy calls: nodes are sorted
into buckets by the size of their in-plane bounding box, and all slices of a
bucket's nodes are stacked into one array (each slice at the corner of its
tile; the rest of a tile is background, which changes no boundary vertex). The
long axes of all slices, the short axes of every long axis tied for its node's
longest, and the 3D diameters of all nodes are then each found in one grouped
computation. No step touches the whole volume or loops over voxels; the only
per-node loops are for the rare boundaries too large for an all-pairs Feret
diameter (which go through the convex hull).

The results are those of measuring each node on its own, bit for bit: every
vertex, distance, crossing and comparison is the same floating-point operation
on the same numbers, whatever the grouping (tests/pipeline/measure/test_batch.py
checks this against a straightforward per-node computation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import MeasurementError
from pipeline.measure.boundary import (
    CHUNK_CELLS,
    PAD_PX,
    SliceBoundaries,
    concatenate_boundaries,
    padded_slice_boundaries,
)
from pipeline.measure.feret import grouped_feret, grouped_perpendicular_chord, ranges

TILE_STEP_PX = 8


@dataclass(frozen=True)
class NodeVoxels:
    """Voxels of N nodes, grouped by node (node ``i`` owns ``starts[i]:starts[i + 1]``) and in
    raster order within a node, as ``[z, y, x]`` indices relative to the node's box, whose
    size is ``box_size[i]`` (z, y, x)."""

    starts: np.ndarray
    zyx: np.ndarray
    box_size: np.ndarray

    @property
    def n_nodes(self) -> int:
        return len(self.starts) - 1

    @classmethod
    def from_mask(cls, node_zyx: np.ndarray) -> NodeVoxels:
        """One node: the voxels of a mask, its box the whole array."""
        if not node_zyx.any():
            raise MeasurementError("the node mask is empty")
        zyx = np.argwhere(node_zyx)
        return cls(starts=np.array([0, len(zyx)]), zyx=zyx, box_size=np.array([node_zyx.shape]))


@dataclass(frozen=True)
class BoundaryMeasures:
    """Per node: RECIST axes on the measured slice (``slice_index``, relative to the box), the
    end points as (x, y) mm relative to the centre of the box's pixel ``[0, 0]`` (``(N, 2, 2)``:
    node, end, coordinate), and the largest 3D diameter, all in mm."""

    long_axis_mm: np.ndarray
    short_axis_mm: np.ndarray
    slice_index: np.ndarray
    long_axis_endpoints_mm: np.ndarray
    short_axis_endpoints_mm: np.ndarray
    max_diameter_3d_mm: np.ndarray


def _contour_nodes(
    voxels: NodeVoxels, spacing_xy_mm: tuple[float, float]
) -> tuple[SliceBoundaries, np.ndarray]:
    """Boundaries of every slice of every node, and each node's first slice in them (slices of a
    node are consecutive, ``box_size[i, 0]`` of them)."""
    n = voxels.n_nodes
    sizes = voxels.box_size
    counts = np.diff(voxels.starts)
    tiles = np.column_stack([_tile_sides(sizes[:, 1]), _tile_sides(sizes[:, 2])])
    first_slice = np.zeros(n, dtype=np.int64)
    parts: list[SliceBoundaries] = []
    slice_base = 0
    keys, bucket_of_node = np.unique(tiles, axis=0, return_inverse=True)
    bucket_of_node = bucket_of_node.ravel()
    for b, (th, tw) in enumerate(keys):
        nodes = np.flatnonzero(bucket_of_node == b)
        depth = sizes[nodes, 0]
        offsets = np.concatenate([[0], np.cumsum(depth)[:-1]])
        # each slice at the corner of its tile, with the boundary's padding before it; the
        # bucket's slices are filled and contoured a chunk at a time, to bound memory.
        # Voxels are in raster order within a node, so their stack slices never decrease.
        mine = ranges(voxels.starts[:-1][nodes], counts[nodes])
        stack_z = np.repeat(offsets, counts[nodes]) + voxels.zyx[mine, 0]
        total = int(depth.sum())
        per_chunk = max(1, CHUNK_CELLS // int(th * tw))
        for z0 in range(0, total, per_chunk):
            z1 = min(total, z0 + per_chunk)
            lo, hi = np.searchsorted(stack_z, [z0, z1])
            padded = np.zeros((z1 - z0, int(th), int(tw)))
            _, y, x = voxels.zyx[mine[lo:hi]].T
            padded[stack_z[lo:hi] - z0, y + PAD_PX, x + PAD_PX] = 1.0
            parts.append(padded_slice_boundaries(padded, spacing_xy_mm))
        first_slice[nodes] = slice_base + offsets
        slice_base += total
    return concatenate_boundaries(parts), first_slice


def _tile_sides(sides: np.ndarray) -> np.ndarray:
    return -(-(np.asarray(sides, dtype=np.int64) + 2 * PAD_PX) // TILE_STEP_PX) * TILE_STEP_PX


def measure_boundaries(voxels: NodeVoxels, spacing_mm: tuple[float, float, float]) -> BoundaryMeasures:
    """RECIST axes and 3D diameter of every node of ``voxels`` (spacing ``(x, y, z)`` mm).

    Per node, as :mod:`pipeline.measure.recist` and :mod:`pipeline.measure.diameter3d`
    define them: the longest long axis over all slices is measured; among equally
    long ones (on one slice or several), the one with the longer short axis, then
    the one on the lower slice, then the first pair in canonical order. The 3D
    diameter is the Feret diameter of the slice boundaries closed by two poles.
    """
    n = voxels.n_nodes
    if n == 0:
        empty = np.zeros(0)
        return BoundaryMeasures(
            empty, empty, np.zeros(0, np.int64), np.zeros((0, 2, 2)), np.zeros((0, 2, 2)), empty
        )
    if np.any(np.diff(voxels.starts) == 0):
        raise MeasurementError("a node has no voxels")
    boundaries, first_slice = _contour_nodes(voxels, (float(spacing_mm[0]), float(spacing_mm[1])))
    depth = voxels.box_size[:, 0].astype(np.int64)
    vertices = boundaries.vertices_mm
    vstarts = boundaries.vertex_starts
    n_slices = boundaries.n_slices

    # long axis of every slice; per node, the longest
    feret = grouped_feret(vertices, vstarts)
    long_mm = feret.length
    node_of_slice = np.empty(n_slices, dtype=np.int64)
    node_of_slice[ranges(first_slice, depth)] = np.repeat(np.arange(n), depth)
    longest = np.full(n, -np.inf)
    np.maximum.at(longest, node_of_slice, long_mm)

    # the short axis of every long axis as long as the node's longest (on any slice, any pair)
    tied = long_mm[feret.tie_group] == longest[node_of_slice[feret.tie_group]]
    pair_slice = feret.tie_group[tied]
    row_p, row_q = feret.tie_i[tied], feret.tie_j[tied]
    p, q = vertices[row_p], vertices[row_q]
    pair_long = long_mm[pair_slice]
    positive = pair_long > 0.0
    directions = np.where(positive[:, None], (q - p) / np.where(positive, pair_long, 1.0)[:, None], 0.0)
    edge_counts = np.diff(boundaries.edge_starts)[pair_slice]
    edge_rows = ranges(boundaries.edge_starts[pair_slice], edge_counts)
    short_mm, short_a, short_b = grouped_perpendicular_chord(
        vertices[boundaries.edges[edge_rows]], np.concatenate([[0], np.cumsum(edge_counts)]), directions
    )
    # a zero long axis (cannot happen around pixels) has a zero short axis at its point
    short_mm = np.where(positive, short_mm, 0.0)
    short_a = np.where(positive[:, None], short_a, p)
    short_b = np.where(positive[:, None], short_b, p)

    # per node: the longest short axis, then the lowest slice, then the first pair
    # (pairs are listed by slice, then in canonical order)
    pair_node = node_of_slice[pair_slice]
    order = np.lexsort((np.arange(len(pair_slice)), -short_mm, pair_node))
    chosen = order[np.concatenate([[True], pair_node[order][1:] != pair_node[order][:-1]])]
    chosen_slice = pair_slice[chosen]

    diameters = _diameters_3d(
        boundaries, first_slice, depth, float(spacing_mm[2]), row_p[chosen], row_q[chosen]
    )
    return BoundaryMeasures(
        long_axis_mm=long_mm[chosen_slice],
        short_axis_mm=short_mm[chosen],
        slice_index=chosen_slice - first_slice,
        long_axis_endpoints_mm=np.stack([p[chosen], q[chosen]], axis=1),
        short_axis_endpoints_mm=np.stack([short_a[chosen], short_b[chosen]], axis=1),
        max_diameter_3d_mm=diameters,
    )


def slice_means(vertices: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Mean of ``vertices[starts[i]:stops[i]]`` for each i (non-empty ranges), one summation
    order for every caller: left to right (``np.add.reduceat``)."""
    index = np.column_stack([starts, stops]).ravel()
    sums = np.add.reduceat(np.concatenate([vertices, np.zeros((1, vertices.shape[1]))]), index)[::2]
    return sums / (np.asarray(stops) - np.asarray(starts))[:, None]


def _diameters_3d(
    boundaries: SliceBoundaries,
    first_slice: np.ndarray,
    depth: np.ndarray,
    slice_spacing_mm: float,
    long_p: np.ndarray,
    long_q: np.ndarray,
) -> np.ndarray:
    """Feret diameter of each node's surface points (see
    :func:`pipeline.measure.diameter3d.surface_points`), comparing the long axis's ends always."""
    n = len(first_slice)
    vstarts = boundaries.vertex_starts
    counts = np.diff(vstarts)
    # first and last slice with a boundary, per node
    slices = ranges(first_slice, depth)
    node_of_slice = np.repeat(np.arange(n), depth)
    filled = counts[slices] > 0
    low = np.full(n, np.iinfo(np.int64).max)
    high = np.full(n, -1)
    np.minimum.at(low, node_of_slice[filled], slices[filled])
    np.maximum.at(high, node_of_slice[filled], slices[filled])
    poles_xy = np.concatenate(
        [
            slice_means(boundaries.vertices_mm, vstarts[low], vstarts[low + 1]),
            slice_means(boundaries.vertices_mm, vstarts[high], vstarts[high + 1]),
        ]
    )
    sz = slice_spacing_mm
    # per node: its vertices (slice by slice) at z = k * sz, then the lower and the upper pole
    v_first, v_stop = vstarts[first_slice], vstarts[first_slice + depth]
    n_vertices = v_stop - v_first
    rows = ranges(v_first, n_vertices)
    slice_of_vertex = np.repeat(np.arange(boundaries.n_slices), counts)[rows]
    node_of_vertex = np.repeat(np.arange(n), n_vertices)
    k = slice_of_vertex - first_slice[node_of_vertex]
    size = n_vertices + 2
    starts = np.concatenate([[0], np.cumsum(size)])
    points = np.empty((int(starts[-1]), 3))
    at = ranges(starts[:-1], n_vertices)
    points[at, :2] = boundaries.vertices_mm[rows]
    points[at, 2] = k * sz
    lower, upper = starts[1:] - 2, starts[1:] - 1
    points[lower, :2], points[upper, :2] = poles_xy[:n], poles_xy[n:]
    points[lower, 2] = (low - first_slice - 0.5) * sz
    points[upper, 2] = (high - first_slice + 0.5) * sz
    include = np.column_stack([long_p - v_first, long_q - v_first])
    return grouped_feret(points, starts, include=include).length

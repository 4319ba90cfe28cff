"""Largest distances (Feret diameters) and perpendicular chords of boundary point sets.

Each computation comes in a grouped form (many point sets or boundaries at once)
that gives, bit for bit, what one call per group gives: every distance and
crossing is the same elementwise floating-point formula, and ties are broken by
position in a canonical order, never by the order work was batched in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import MeasurementError

BRUTE_FORCE_MAX_POINTS = 128
"""Feret diameters of up to this many points compare every pair; larger sets only the
vertices of their convex hull (where the largest distance always lies)."""

_PAIR_BLOCK = 2_000_000  # distances or crossings computed at once, to bound memory


def pair_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between rows of ``a`` and ``b`` (broadcast), one fixed formula so
    that every caller gets the same bits: sqrt(d0 * d0 + d1 * d1 [+ d2 * d2])."""
    d = a - b
    squared = d[..., 0] * d[..., 0]
    for axis in range(1, d.shape[-1]):
        squared = squared + d[..., axis] * d[..., axis]
    return np.sqrt(squared)


def feret_candidates(points: np.ndarray, include: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``points`` that can hold its Feret diameter, ascending: all of them up to
    :data:`BRUTE_FORCE_MAX_POINTS`, else the convex hull's vertices (plus ``include``)."""
    n = len(points)
    if n <= BRUTE_FORCE_MAX_POINTS:
        return np.arange(n)
    from scipy.spatial import ConvexHull, QhullError  # here: the job's launcher imports this module

    try:
        rows = ConvexHull(points).vertices
    except QhullError:  # collinear or flat: every point is a candidate
        return np.arange(n)
    if include is not None:
        rows = np.concatenate([rows, np.asarray(include, dtype=rows.dtype)])
    return np.unique(rows)


def feret_pairs(points: np.ndarray, include: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Largest distance between two rows of ``points`` (N, D), and every pair of rows (i < j)
    that far apart, (T, 2), in row-major order over the candidates (ascending rows).

    ``include``: rows always compared (so that a known pair's distance is never
    missed through the hull's numerical tolerance). A single point: (0, its row twice).
    """
    if len(points) == 0:
        raise MeasurementError("no boundary points to measure a diameter on")
    rows = feret_candidates(points, include)
    candidates = points[rows]
    n = len(candidates)
    if n == 1:
        return 0.0, np.array([[rows[0], rows[0]]])
    best = -1.0
    ties: list[np.ndarray] = []
    block = max(1, _PAIR_BLOCK // n)
    columns = np.arange(n)
    for first in range(0, n, block):
        rows_i = np.arange(first, min(n, first + block))
        dist = pair_distances(candidates[rows_i, None, :], candidates[None, :, :])
        dist[columns[None, :] <= rows_i[:, None]] = -1.0  # pairs i < j only
        value = float(dist.max())
        if value < best:
            continue
        if value > best:
            best, ties = value, []
        i, j = np.nonzero(dist == value)
        ties.append(np.column_stack([rows_i[i], j]))
    return best, rows[np.concatenate(ties)]


def feret_diameter(points: np.ndarray, include: np.ndarray | None = None) -> tuple[float, int, int]:
    """Largest distance between two rows of ``points`` (N, D), and the first such pair of rows
    (see :func:`feret_pairs`)."""
    length, pairs = feret_pairs(points, include)
    return length, int(pairs[0, 0]), int(pairs[0, 1])


@dataclass(frozen=True)
class GroupedFeret:
    """Feret diameters of groups of points: per group its ``length`` and first pair of rows
    (``row_i``, ``row_j``); and every pair of rows that far apart (``tie_group``, ``tie_i``,
    ``tie_j``), by group, each group's in the order of :func:`feret_pairs`."""

    length: np.ndarray
    row_i: np.ndarray
    row_j: np.ndarray
    tie_group: np.ndarray
    tie_i: np.ndarray
    tie_j: np.ndarray


def grouped_feret(points: np.ndarray, starts: np.ndarray, include: np.ndarray | None = None) -> GroupedFeret:
    """:func:`feret_pairs` of each group ``points[starts[g]:starts[g + 1]]``, all at once, rows
    into ``points``: the same as one call per group. ``include``: (G, 2) rows of each group,
    relative to its start, always compared. Empty groups have length 0 and no pair."""
    starts = np.asarray(starts, dtype=np.int64)
    sizes = np.diff(starts)
    n_groups = len(sizes)
    length = np.zeros(n_groups)
    row_i = starts[:-1].copy()
    row_j = starts[:-1].copy()
    tie_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for size in np.unique(sizes):
        groups = np.flatnonzero(sizes == size)
        if size == 0:
            continue
        if size == 1 or size > BRUTE_FORCE_MAX_POINTS:
            for group in groups:
                s = int(starts[group])
                extra = None if include is None else include[group]
                length[group], pairs = feret_pairs(points[s : s + int(size)], extra)
                row_i[group], row_j[group] = s + pairs[0]
                tie_parts.append((np.full(len(pairs), group), s + pairs[:, 0], s + pairs[:, 1]))
            continue
        iu, ju = np.triu_indices(int(size), 1)
        per_block = max(1, _PAIR_BLOCK // len(iu))
        for block_start in range(0, len(groups), per_block):
            g = groups[block_start : block_start + per_block]
            base = starts[g][:, None]
            dist = pair_distances(points[base + iu], points[base + ju])
            best = np.argmax(dist, axis=1)
            length[g] = dist[np.arange(len(g)), best]
            row_i[g] = starts[g] + iu[best]
            row_j[g] = starts[g] + ju[best]
            tied_group, tied_pair = np.nonzero(dist == length[g][:, None])
            tie_parts.append(
                (g[tied_group], starts[g][tied_group] + iu[tied_pair], starts[g][tied_group] + ju[tied_pair])
            )
    if tie_parts:
        tie_group, tie_i, tie_j = (np.concatenate(part) for part in zip(*tie_parts, strict=True))
    else:
        tie_group = tie_i = tie_j = np.zeros(0, dtype=np.int64)
    order = np.argsort(tie_group, kind="stable")
    return GroupedFeret(length, row_i, row_j, tie_group[order], tie_i[order], tie_j[order])


def grouped_perpendicular_chord(
    edges: np.ndarray, starts: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`perpendicular_chord` of each group of edges ``edges[starts[g]:starts[g + 1]]``
    against its unit direction ``directions[g]``, all at once: (length (G,), one end (G, 2),
    the other end (G, 2)); the same as one call per group."""
    starts = np.asarray(starts, dtype=np.int64)
    sizes = np.diff(starts)
    n_groups = len(sizes)
    if np.any(sizes == 0):
        raise MeasurementError("no boundary edges to measure a chord on")
    group_of_edge = np.repeat(np.arange(n_groups), sizes)
    u0, u1 = directions[group_of_edge, 0], directions[group_of_edge, 1]
    ax, ay, bx, by = edges[:, 0, 0], edges[:, 0, 1], edges[:, 1, 0], edges[:, 1, 1]
    a_u, b_u = ax * u0 + ay * u1, bx * u0 + by * u1
    a_v, b_v = ay * u0 - ax * u1, by * u0 - bx * u1  # v = (-u1, u0)
    # orient every edge by increasing projection, so crossings never depend on how it was stored
    swap = b_u < a_u
    a_u, b_u = np.where(swap, b_u, a_u), np.where(swap, a_u, b_u)
    a_v, b_v = np.where(swap, b_v, a_v), np.where(swap, a_v, b_v)
    du = b_u - a_u
    flat = du < 1e-12
    safe_du = np.where(flat, 1.0, du)
    # the lines to try: every vertex projection of each group, ascending and distinct
    position_group = np.concatenate([group_of_edge, group_of_edge])
    position = np.concatenate([a_u, b_u])
    order = np.lexsort((position, position_group))
    position_group, position = position_group[order], position[order]
    distinct = np.ones(len(position), dtype=bool)
    distinct[1:] = (position_group[1:] != position_group[:-1]) | (position[1:] != position[:-1])
    position_group, position = position_group[distinct], position[distinct]
    # each line against the edges it crosses: those of its group whose projections span it
    # (for each edge, a run of consecutive lines, found by one sort of lines and edge ends;
    # an edge end sorts before an equal line if it is the low end, after it if the high one)
    n_lines, n_edges = len(position), len(a_u)
    kind = np.concatenate(
        [np.ones(n_lines, np.int8), np.zeros(n_edges, np.int8), np.full(n_edges, 2, np.int8)]
    )
    order = np.lexsort(
        (
            kind,
            np.concatenate([position, a_u, b_u]),
            np.concatenate([position_group, group_of_edge, group_of_edge]),
        )
    )
    lines_up_to = np.empty(len(order), dtype=np.int64)
    lines_up_to[order] = np.cumsum(kind[order] == 1)
    first_line = lines_up_to[n_lines : n_lines + n_edges]  # the first line at or after the low end
    n_crossed = lines_up_to[n_lines + n_edges :] - first_line  # lines up to the high end, from it
    top = np.full(n_lines, -np.inf)
    bottom = np.full(n_lines, np.inf)
    bounds = np.concatenate([[0], np.cumsum(n_crossed)])
    first = 0
    while first < n_edges:  # blocks of whole edges, to bound memory
        last = max(int(np.searchsorted(bounds, bounds[first] + _PAIR_BLOCK, side="right")) - 1, first + 1)
        e = np.repeat(np.arange(first, last), n_crossed[first:last])
        line = ranges(first_line[first:last], n_crossed[first:last])
        t = position[line]
        frac = np.where(flat[e], 0.0, (t - a_u[e]) / safe_du[e])
        crossing = a_v[e] + frac * (b_v[e] - a_v[e])
        # an edge lying on the line contributes both of its ends
        on_line = np.where(flat[e], b_v[e], crossing)
        np.maximum.at(top, line, np.maximum(crossing, on_line))
        np.minimum.at(bottom, line, np.minimum(crossing, on_line))
        first = last
    chord = np.where(np.isfinite(top), top - bottom, -np.inf)
    # per group, the longest chord; among equal ones the first along the direction
    group_best = np.full(n_groups, -np.inf)
    np.maximum.at(group_best, position_group, chord)
    is_best = chord == group_best[position_group]
    best_line = np.full(n_groups, len(position))
    np.minimum.at(best_line, position_group[is_best], np.flatnonzero(is_best))
    t, lo, hi = position[best_line], bottom[best_line], top[best_line]
    u0, u1 = directions[:, 0], directions[:, 1]
    end_low = np.column_stack([t * u0 - lo * u1, t * u1 + lo * u0])
    end_high = np.column_stack([t * u0 - hi * u1, t * u1 + hi * u0])
    return np.maximum(group_best, 0.0), end_low, end_high


def perpendicular_chord(edges: np.ndarray, direction: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Longest chord of a boundary perpendicular to unit ``direction`` (outermost crossings).

    ``edges``: (E, 2, 2), the start and end point of each boundary edge. Returns
    the chord's length and its two end points (on the boundary, in the edges'
    coordinates). Along the direction, the chord length is piecewise linear
    between vertex projections, so its maximum is found exactly by evaluating it
    at each one; among equal maxima, the first along ``direction``.
    """
    length, a, b = grouped_perpendicular_chord(
        np.asarray(edges, dtype=float), np.array([0, len(edges)]), np.asarray(direction, dtype=float)[None, :]
    )
    return float(length[0]), a[0], b[0]


def polygon_edges(polygons: list[np.ndarray]) -> np.ndarray:
    """Edges (E, 2, 2) of closed polygons given as (N, 2) vertex arrays."""
    return np.concatenate([np.stack([p, np.roll(p, -1, axis=0)], axis=1) for p in polygons])


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + l)`` for each start and length."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(total)

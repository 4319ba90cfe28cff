"""The batched measurement equals a straightforward per-node one, and its boundary equals
scikit-image's find_contours.

``reference_measure`` below is the plain definition: for each node, crop it to its
box, contour each slice on its own, take each slice's Feret diameter, measure the
short axis on every slice tied for the longest long axis, and take the 3D Feret
diameter of that node's own surface points; every per-node figure from the node's
own voxels. The fast path (``measure_labelled``) must give the same results,
within 1e-9 mm (in practice bit for bit for the axes).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import find_contours

from pipeline.geometry import Geometry
from pipeline.measure.boundary import SliceBoundaries, concatenate_boundaries, slice_boundaries
from pipeline.measure.components import label_nodes
from pipeline.measure.diameter3d import surface_points
from pipeline.measure.feret import (
    BRUTE_FORCE_MAX_POINTS,
    feret_diameter,
    feret_pairs,
    grouped_feret,
    grouped_perpendicular_chord,
    perpendicular_chord,
)
from pipeline.measure.nodes import NodeMeasurement, _labelled_voxels, measure_labelled
from tests.support.analytic_shapes import ellipsoid, random_nodes

TOLERANCE_MM = 1e-9


def _rotation(seed: int) -> tuple[float, ...]:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 2] = -q[:, 2]
    return tuple(float(v) for v in q.ravel())


def _reference_one(
    labels: np.ndarray, label: int, box: tuple[slice, slice, slice], geometry: Geometry, hu: np.ndarray | None
) -> NodeMeasurement:
    node = labels[box] == label
    offset = np.array([s.start for s in box], dtype=float)
    sx, sy, sz = (float(v) for v in geometry.spacing_mm)
    # each slice on its own
    per_slice = [slice_boundaries(node[k : k + 1], (sx, sy)) for k in range(node.shape[0])]
    longs = []
    for b in per_slice:
        points = b.slice_vertices(0)
        longs.append(feret_pairs(points) if len(points) else (0.0, np.zeros((0, 2), int)))
    longest = max(length for length, _ in longs)
    best = None
    for k, (length, pairs) in enumerate(longs):
        if length != longest:
            continue
        for i, j in pairs:  # every pair as far apart, in canonical order
            p, q = per_slice[k].slice_vertices(0)[i], per_slice[k].slice_vertices(0)[j]
            short, r, s = perpendicular_chord(per_slice[k].slice_edges(0), (q - p) / length)
            if best is None or short > best[1]:
                best = (k, short, p, q, r, s, i, j)
    assert best is not None
    k, short, p, q, r, s, i, j = best
    # the 3D diameter on this node's own surface
    boundaries: SliceBoundaries = concatenate_boundaries(per_slice)
    ip, iq = boundaries.vertex_starts[k] + i, boundaries.vertex_starts[k] + j
    diameter, _, _ = feret_diameter(surface_points(boundaries, sz), include=np.array([ip, iq]))
    # per-node figures from its voxels
    indices = np.argwhere(node) + offset
    centroid = geometry.index_to_physical(indices.mean(axis=0)[None, :])[0]
    in_slice = np.argwhere(node[k]).mean(axis=0) + offset[1:]
    slice_point = geometry.index_to_physical(np.array([[k + offset[0], *in_slice]]))[0]
    corners = np.array(
        [
            [z, y, x]
            for z in (box[0].start, box[0].stop - 1)
            for y in (box[1].start, box[1].stop - 1)
            for x in (box[2].start, box[2].stop - 1)
        ],
        dtype=float,
    )
    physical_corners = geometry.index_to_physical(corners)

    def ends(a: np.ndarray, b: np.ndarray) -> tuple[tuple[float, ...], ...]:
        index = np.array([[k + offset[0], e[1] / sy + offset[1], e[0] / sx + offset[2]] for e in (a, b)])
        return tuple(tuple(float(v) for v in row) for row in geometry.index_to_physical(index))

    values = hu[box][node].astype(np.float64) if hu is not None else None
    return NodeMeasurement(
        node_index=label,
        voxel_count=len(indices),
        volume_ml=len(indices) * geometry.voxel_volume_ml,
        centroid_mm=tuple(float(v) for v in centroid),  # type: ignore[arg-type]
        long_axis_mm=float(longest),
        short_axis_mm=float(short),
        measurement_slice_z_mm=float(slice_point[2]),
        max_diameter_3d_mm=float(diameter),
        bbox_min_mm=tuple(float(v) for v in physical_corners.min(axis=0)),  # type: ignore[arg-type]
        bbox_max_mm=tuple(float(v) for v in physical_corners.max(axis=0)),  # type: ignore[arg-type]
        mean_hu=float(values.mean()) if values is not None else None,
        std_hu=float(values.std()) if values is not None else None,
        long_axis_endpoints_mm=ends(p, q),  # type: ignore[arg-type]
        short_axis_endpoints_mm=ends(r, s),  # type: ignore[arg-type]
    )


def reference_measure(
    labels: np.ndarray, geometry: Geometry, hu: np.ndarray | None = None
) -> list[NodeMeasurement]:
    """The straightforward per-node computation the fast path must reproduce."""
    return [
        _reference_one(labels, i + 1, box, geometry, hu)
        for i, box in enumerate(ndimage.find_objects(labels))
        if box is not None
    ]


def _assert_same(fast: list[NodeMeasurement], reference: list[NodeMeasurement]) -> None:
    assert [n.node_index for n in fast] == [n.node_index for n in reference]
    for f, r in zip(fast, reference, strict=True):
        assert f.voxel_count == r.voxel_count
        for name in (
            "volume_ml",
            "long_axis_mm",
            "short_axis_mm",
            "measurement_slice_z_mm",
            "max_diameter_3d_mm",
        ):
            assert getattr(f, name) == pytest.approx(getattr(r, name), abs=TOLERANCE_MM), (f.node_index, name)
        for name in (
            "centroid_mm",
            "bbox_min_mm",
            "bbox_max_mm",
            "long_axis_endpoints_mm",
            "short_axis_endpoints_mm",
        ):
            assert np.asarray(getattr(f, name)) == pytest.approx(
                np.asarray(getattr(r, name)), abs=TOLERANCE_MM
            ), (
                f.node_index,
                name,
            )
        if r.mean_hu is None:
            assert f.mean_hu is None and f.std_hu is None
        else:
            assert f.mean_hu == pytest.approx(r.mean_hu, abs=TOLERANCE_MM)
            assert f.std_hu == pytest.approx(r.std_hu, abs=TOLERANCE_MM)


@pytest.mark.parametrize(
    ("seed", "spacing", "oblique"),
    [(1, (0.78, 0.78, 1.25), False), (2, (0.7, 0.9, 2.5), True), (3, (0.6, 0.6, 5.0), True)],
)
def test_fast_path_equals_reference_on_random_nodes(
    seed: int, spacing: tuple[float, float, float], oblique: bool
) -> None:
    mask = random_nodes((24, 160, 160), 300, seed=seed)
    geometry = Geometry(
        size_zyx=mask.shape,
        origin_mm=(-80.0, 20.0, -300.0),
        spacing_mm=spacing,
        direction=_rotation(seed) if oblique else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    labels = label_nodes(mask, geometry)
    hu = np.random.default_rng(seed).normal(40.0, 10.0, mask.shape).astype(np.float32)
    fast = measure_labelled(labels, geometry, hu=hu)
    assert len(fast) >= 250
    _assert_same(fast, reference_measure(labels, geometry, hu))


def test_fast_path_equals_reference_on_ellipsoids_and_large_boundaries() -> None:
    """Large nodes: slices and surfaces over the all-pairs limit go through the convex hull."""
    rng = np.random.default_rng(4)
    masks = []
    for _ in range(6):
        spacing = (0.7, 0.7, float(rng.choice([1.0, 2.5])))
        mask, _ = ellipsoid(
            semi_axes_mm=tuple(float(v) for v in rng.uniform(3, 16, 3)),
            angle_rad=rng.uniform(0, math.pi),
            spacing_mm=spacing,
            center_offset_vox=tuple(rng.uniform(-0.5, 0.5, 3)),
        )
        masks.append(mask)
    shape = tuple(max(m.shape[i] for m in masks) for i in range(3))
    labels = np.zeros((shape[0], shape[1], sum(m.shape[2] + 1 for m in masks)), np.int32)
    x = 0
    for i, m in enumerate(masks):
        labels[: m.shape[0], : m.shape[1], x : x + m.shape[2]][m] = i + 1
        x += m.shape[2] + 1
    geometry = Geometry(
        size_zyx=labels.shape, origin_mm=(0.0, 0.0, 0.0), spacing_mm=(0.7, 0.7, 2.5), direction=_rotation(9)
    )
    fast = measure_labelled(labels, geometry)
    reference = reference_measure(labels, geometry)
    biggest = max(int(np.diff(slice_boundaries(m, (0.7, 0.7)).vertex_starts).max()) for m in masks)
    assert biggest > BRUTE_FORCE_MAX_POINTS, biggest  # some slices go through the convex hull
    _assert_same(fast, reference)


def test_fast_path_equals_reference_on_the_phantom(phantom) -> None:
    from pipeline.dicom.ct import decode_ct_series

    ct = decode_ct_series(str(phantom.ct_dir))
    labels = label_nodes(phantom.mask, ct.geometry)
    _assert_same(
        measure_labelled(labels, ct.geometry, hu=ct.hu), reference_measure(labels, ct.geometry, ct.hu)
    )


def test_boundary_is_scikit_image_find_contours() -> None:
    """Same vertices, bit for bit, and same edges (saddles included) as find_contours at 0.5
    on the mask blurred by 0.5 pixel: the boundary model of the RECIST axes is unchanged."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        ny, nx = (int(v) for v in rng.integers(1, 15, 2))
        mask = rng.random((3, ny, nx)) < rng.uniform(0.2, 0.9)
        sx, sy = (float(v) for v in rng.uniform(0.5, 1.2, 2))
        boundaries = slice_boundaries(mask, (sx, sy))
        for k in range(3):
            if not mask[k].any():
                assert len(boundaries.slice_vertices(k)) == 0
                continue
            blurred = ndimage.gaussian_filter(np.pad(mask[k].astype(float), 2), 0.5, mode="constant")
            polygons = [
                np.column_stack([(c[:, 1] - 2) * sx, (c[:, 0] - 2) * sy]) for c in find_contours(blurred, 0.5)
            ]
            vertices = {tuple(p) for poly in polygons for p in poly}
            edges = {
                frozenset((tuple(a), tuple(b)))
                for poly in polygons
                for a, b in zip(poly[:-1], poly[1:], strict=True)
            }
            assert {tuple(p) for p in boundaries.slice_vertices(k)} == vertices
            assert len(boundaries.slice_vertices(k)) == len(vertices)
            assert {frozenset((tuple(a), tuple(b))) for a, b in boundaries.slice_edges(k)} == edges


def test_grouped_feret_and_chord_equal_one_call_per_group() -> None:
    rng = np.random.default_rng(6)
    sizes = [1, 2, 3, 7, BRUTE_FORCE_MAX_POINTS, BRUTE_FORCE_MAX_POINTS + 1, 300, 5, 5]
    groups = [rng.normal(size=(n, 2)) * rng.uniform(0.5, 20) for n in sizes]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    # a square and a regular hexagon: several pairs equally far apart
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    hexagon = np.array([[np.cos(a), np.sin(a)] for a in np.arange(6) * np.pi / 3]).round(12)
    groups += [square, hexagon]
    starts = np.concatenate([[0], np.cumsum([len(g) for g in groups])])
    grouped = grouped_feret(np.concatenate(groups), starts)
    for g, points in enumerate(groups):
        expected, i, j = feret_diameter(points)
        length, pairs = feret_pairs(points)
        assert grouped.length[g] == expected == length
        assert (grouped.row_i[g] - starts[g], grouped.row_j[g] - starts[g]) == (i, j) == tuple(pairs[0])
        mine = grouped.tie_group == g
        assert np.array_equal(np.column_stack([grouped.tie_i[mine], grouped.tie_j[mine]]) - starts[g], pairs)
    assert len(feret_pairs(square)[1]) == 2
    edges = [np.stack([p, np.roll(p, -1, axis=0)], axis=1) for p in groups if len(p) >= 3]
    directions = np.array([[math.cos(a), math.sin(a)] for a in rng.uniform(0, math.pi, len(edges))])
    edge_starts = np.concatenate([[0], np.cumsum([len(e) for e in edges])])
    chord, ends_a, ends_b = grouped_perpendicular_chord(np.concatenate(edges), edge_starts, directions)
    for g, e in enumerate(edges):
        expected, a, b = perpendicular_chord(e, directions[g])
        assert chord[g] == expected
        assert np.array_equal(ends_a[g], a) and np.array_equal(ends_b[g], b)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 4, 8), (1, 1, 1), (4, 3, 3)])
def test_labelled_voxels_of_any_integer_type_and_size(dtype: type, shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    labels = (rng.integers(0, 4, shape) * (rng.random(shape) < 0.3)).astype(dtype)
    flat, values = _labelled_voxels(labels)
    assert np.array_equal(flat, np.flatnonzero(labels))
    assert np.array_equal(values, labels.ravel()[np.flatnonzero(labels)])
    # not contiguous: a view of every other column
    wide = np.repeat(labels, 2, axis=2)[:, :, ::2]
    flat, values = _labelled_voxels(wide)
    assert np.array_equal(flat, np.flatnonzero(labels))


def test_chunked_contouring_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices are filled and contoured a chunk at a time (to bound memory on huge nodes)."""
    import pipeline.measure.batch as batch
    import pipeline.measure.boundary as boundary

    mask = random_nodes((24, 160, 160), 120, seed=5)
    geometry = Geometry(
        size_zyx=mask.shape, origin_mm=(0.0, 0.0, 0.0), spacing_mm=(0.8, 0.8, 2.0), direction=_rotation(5)
    )
    labels = label_nodes(mask, geometry)
    whole = measure_labelled(labels, geometry)
    monkeypatch.setattr(batch, "CHUNK_CELLS", 700)
    monkeypatch.setattr(boundary, "CHUNK_CELLS", 300)
    chunked = measure_labelled(labels, geometry)
    assert chunked == whole


def _chord_by_definition(edges: np.ndarray, direction: np.ndarray) -> float:
    """For every line through a vertex perpendicular to ``direction``: the distance between the
    outermost crossings of the edges it meets; the longest."""
    u = direction
    v = np.array([-u[1], u[0]])
    best = 0.0
    projected = [(float(a @ u), float(b @ u)) for a, b in edges]
    for t in sorted({p for pair in projected for p in pair}):
        crossings = []
        for (a, b), (au, bu) in zip(edges, projected, strict=True):
            if min(au, bu) <= t <= max(au, bu):
                if abs(bu - au) < 1e-12:
                    crossings += [float(a @ v), float(b @ v)]
                else:
                    crossings.append(float((a + (t - au) / (bu - au) * (b - a)) @ v))
        best = max(best, max(crossings) - min(crossings))
    return best


def test_chord_by_definition_on_random_polygons() -> None:
    """Star-shaped (non-convex) polygons and pixel-like ones with edges along the lines."""
    rng = np.random.default_rng(12)
    for trial in range(60):
        n = int(rng.integers(3, 40))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(0.3, 1.0, n)
        polygon = np.column_stack([radius * np.cos(angles), radius * np.sin(angles)]) * rng.uniform(1, 20)
        if trial % 3 == 0:
            polygon = np.round(polygon)  # many vertices share a projection
        direction = np.array([1.0, 0.0]) if trial % 3 == 0 else rng.normal(size=2)
        direction = direction / np.linalg.norm(direction)
        edges = np.stack([polygon, np.roll(polygon, -1, axis=0)], axis=1)
        length, a, b = perpendicular_chord(edges, direction)
        assert length == pytest.approx(_chord_by_definition(edges, direction), abs=1e-9)
        assert float(np.linalg.norm(b - a)) == pytest.approx(length, abs=1e-9)

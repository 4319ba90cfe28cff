"""Measure every node of a mask: size, position, RECIST axes, 3D diameter, density.

All nodes are measured together: one pass finds the labelled voxels (reading
the label volume 8 bytes at a time), and every per-node figure comes from
those voxel lists by grouped numpy reductions; the boundaries are contoured
and measured in batches (:mod:`pipeline.measure.batch`). Nothing is done per
node on the whole volume and nothing loops over voxels in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import MeasurementError
from pipeline.geometry import Geometry
from pipeline.measure.batch import NodeVoxels, measure_boundaries
from pipeline.measure.categories import recist_category
from pipeline.measure.components import label_nodes
from pipeline.measure.quality import NodeQuality, node_quality


@dataclass(frozen=True)
class NodeMeasurement:
    """One 26-connected node. Coordinates are patient LPS mm; bounding box of voxel centres.

    ``long_axis_endpoints_mm`` and ``short_axis_endpoints_mm``: the two end points of
    the RECIST long and short axes, on the node's sub-pixel boundary on the
    measurement slice; their distances are ``long_axis_mm`` and ``short_axis_mm``.
    ``quality_flag``: ``speck`` or ``implausible`` when the node should not be read as
    a lymph node measurement (:mod:`pipeline.measure.quality`).
    """

    node_index: int
    voxel_count: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    long_axis_mm: float
    short_axis_mm: float
    measurement_slice_z_mm: float
    max_diameter_3d_mm: float
    bbox_min_mm: tuple[float, float, float]
    bbox_max_mm: tuple[float, float, float]
    mean_hu: float | None
    std_hu: float | None
    long_axis_endpoints_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    short_axis_endpoints_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    quality_flag: NodeQuality = NodeQuality.OK

    @property
    def recist_category(self) -> str:
        return recist_category(self.short_axis_mm).value


def measure_nodes(
    mask: np.ndarray, geometry: Geometry, *, hu: np.ndarray | None = None
) -> list[NodeMeasurement]:
    """Measure every 26-connected node of ``mask`` (``[z, y, x]``) on ``geometry``."""
    if mask.shape != tuple(geometry.size_zyx):
        raise MeasurementError(f"mask shape {mask.shape} does not match grid {tuple(geometry.size_zyx)}")
    _check_hu(hu, mask.shape)
    return measure_labelled(label_nodes(mask, geometry), geometry, hu=hu)


def measure_labelled(
    labels: np.ndarray, geometry: Geometry, *, hu: np.ndarray | None = None
) -> list[NodeMeasurement]:
    """Measure nodes already labelled 1..N (as :func:`label_nodes` numbers them), in label order."""
    if labels.shape != tuple(geometry.size_zyx):
        raise MeasurementError(f"label shape {labels.shape} does not match grid {tuple(geometry.size_zyx)}")
    _check_hu(hu, labels.shape)
    if labels.dtype.kind not in "iub":
        raise MeasurementError(f"labels must be integers, not {labels.dtype}")
    flat, values = _labelled_voxels(labels)
    if values.size == 0:
        return []
    if values.min() < 0:
        raise MeasurementError("labels must not be negative")
    order = np.argsort(values, kind="stable")  # by label, raster order within one
    flat, values = flat[order], values[order]
    del order
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    node_labels = values[starts].astype(np.int64)
    counts = np.diff(np.concatenate([starts, [len(values)]]))
    del values
    zyx = _unravel(flat, labels.shape)
    del flat
    box_min = np.minimum.reduceat(zyx, starts)
    box_max = np.maximum.reduceat(zyx, starts)
    node = np.repeat(np.arange(len(node_labels)), counts)
    centroid_index = (
        np.column_stack([np.add.reduceat(zyx[:, axis].astype(np.float64), starts) for axis in range(3)])
        / counts[:, None]
    )
    centroid = geometry.index_to_physical(centroid_index)
    z, y, x = zyx[:, 0], zyx[:, 1], zyx[:, 2]
    voxels = NodeVoxels(
        starts=np.concatenate([starts, [len(zyx)]]), zyx=zyx - box_min[node], box_size=box_max - box_min + 1
    )
    measured = measure_boundaries(voxels, geometry.spacing_mm)
    del voxels

    corners = np.stack(
        [np.where([bz, by, bx], box_max, box_min) for bz in (0, 1) for by in (0, 1) for bx in (0, 1)], axis=1
    ).astype(np.float64)
    physical_corners = geometry.index_to_physical(corners.reshape(-1, 3)).reshape(-1, 8, 3)
    # the measurement slice: its z, at the centre of the node's pixels there
    slice_z = box_min[:, 0] + measured.slice_index
    on_slice = z == slice_z[node]
    n_on_slice = np.bincount(node[on_slice], minlength=len(node_labels))
    in_slice = (
        np.column_stack(
            [np.bincount(node[on_slice], weights=c[on_slice], minlength=len(node_labels)) for c in (y, x)]
        )
        / n_on_slice[:, None]
    )
    slice_point = geometry.index_to_physical(np.column_stack([slice_z, in_slice]))
    sx, sy = float(geometry.spacing_mm[0]), float(geometry.spacing_mm[1])

    def physical_ends(ends_xy: np.ndarray) -> np.ndarray:
        """(N, 2, 2) in-slice (x, y) mm relative to the box to (N, 2, 3) patient LPS mm."""
        index = np.stack(
            [
                np.broadcast_to(slice_z[:, None], ends_xy.shape[:2]),
                ends_xy[:, :, 1] / sy + box_min[:, 1, None],
                ends_xy[:, :, 0] / sx + box_min[:, 2, None],
            ],
            axis=-1,
        ).astype(np.float64)
        return geometry.index_to_physical(index.reshape(-1, 3)).reshape(-1, 2, 3)

    long_ends = physical_ends(measured.long_axis_endpoints_mm)
    short_ends = physical_ends(measured.short_axis_endpoints_mm)
    mean_hu: list[float | None] = [None] * len(node_labels)
    std_hu: list[float | None] = [None] * len(node_labels)
    if hu is not None:
        density = hu[z, y, x].astype(np.float64)
        mean = np.add.reduceat(density, starts) / counts
        std = np.sqrt(np.add.reduceat((density - mean[node]) ** 2, starts) / counts)
        mean_hu, std_hu = [float(v) for v in mean], [float(v) for v in std]
    pixel_mm = max(sx, sy)
    return [
        NodeMeasurement(
            node_index=int(node_labels[i]),
            voxel_count=int(counts[i]),
            volume_ml=int(counts[i]) * geometry.voxel_volume_ml,
            centroid_mm=_xyz(centroid[i]),
            long_axis_mm=float(measured.long_axis_mm[i]),
            short_axis_mm=float(measured.short_axis_mm[i]),
            measurement_slice_z_mm=float(slice_point[i, 2]),
            max_diameter_3d_mm=float(measured.max_diameter_3d_mm[i]),
            bbox_min_mm=_xyz(physical_corners[i].min(axis=0)),
            bbox_max_mm=_xyz(physical_corners[i].max(axis=0)),
            mean_hu=mean_hu[i],
            std_hu=std_hu[i],
            long_axis_endpoints_mm=(_xyz(long_ends[i, 0]), _xyz(long_ends[i, 1])),
            short_axis_endpoints_mm=(_xyz(short_ends[i, 0]), _xyz(short_ends[i, 1])),
            quality_flag=node_quality(
                voxel_count=int(counts[i]), short_axis_mm=float(measured.short_axis_mm[i]), pixel_mm=pixel_mm
            ),
        )
        for i in range(len(node_labels))
    ]


def _check_hu(hu: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if hu is not None and hu.shape != shape:
        raise MeasurementError(f"HU shape {hu.shape} does not match mask {shape}")


def _labelled_voxels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (ascending) and labels (in their own type) of the non-zero voxels. The
    volume is scanned as 8-byte words (a word is non-zero when any of its labels is), so that
    the one pass over it costs about what reading it does; only non-zero words are looked at
    closer."""
    flat = np.ascontiguousarray(labels).reshape(-1)
    size = flat.dtype.itemsize
    per_word = 8 // size if 8 % size == 0 else 1
    n_words = len(flat) // per_word
    if per_word > 1 and n_words > 0:
        words = flat[: n_words * per_word].view(np.uint64)
        hit = np.flatnonzero(words)
        candidates = (hit[:, None] * per_word + np.arange(per_word)).ravel()
        candidates = np.concatenate([candidates, np.arange(n_words * per_word, len(flat))])
    else:
        candidates = np.arange(len(flat))
    values = flat[candidates]
    keep = values != 0
    return candidates[keep], values[keep]


def _unravel(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N, 3) ``[z, y, x]`` indices of flat indices, int32 where the grid allows (memory)."""
    dtype = np.int32 if int(np.prod(shape)) < np.iinfo(np.int32).max else np.int64
    zyx = np.empty((len(flat), 3), dtype=dtype)
    plane = shape[1] * shape[2]
    zyx[:, 0] = flat // plane
    in_plane = flat.astype(dtype) - zyx[:, 0] * plane
    zyx[:, 1] = in_plane // shape[2]
    zyx[:, 2] = in_plane - zyx[:, 1] * shape[2]
    return zyx


def _xyz(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))

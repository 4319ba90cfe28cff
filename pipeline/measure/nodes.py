"""Measure every node of a mask: size, position, RECIST axes, 3D diameter, density."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.dicom.volume import Geometry
from pipeline.measure.categories import recist_category
from pipeline.measure.components import label_nodes
from pipeline.measure.diameter3d import max_diameter_3d
from pipeline.measure.recist import recist_axes


@dataclass(frozen=True)
class NodeMeasurement:
    """One 26-connected node. Coordinates are patient LPS mm; bounding box of voxel centres."""

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

    @property
    def recist_category(self) -> str:
        return recist_category(self.short_axis_mm).value


def measure_nodes(
    mask: np.ndarray, geometry: Geometry, *, hu: np.ndarray | None = None
) -> list[NodeMeasurement]:
    """Measure every 26-connected node of ``mask`` (``[z, y, x]``) on ``geometry``."""
    if mask.shape != geometry.size_zyx:
        raise ValueError(f"mask shape {mask.shape} does not match grid {geometry.size_zyx}")
    if hu is not None and hu.shape != mask.shape:
        raise ValueError(f"HU shape {hu.shape} does not match mask {mask.shape}")
    return measure_labelled(label_nodes(mask, geometry), geometry, hu=hu)


def measure_labelled(
    labels: np.ndarray, geometry: Geometry, *, hu: np.ndarray | None = None
) -> list[NodeMeasurement]:
    """Measure nodes already labelled 1..N (as :func:`label_nodes` numbers them)."""
    boxes = ndimage.find_objects(labels)
    return [
        _measure_one(labels, index + 1, box, geometry, hu)
        for index, box in enumerate(boxes)
        if box is not None
    ]


def _measure_one(
    labels: np.ndarray,
    label: int,
    box: tuple[slice, slice, slice],
    geometry: Geometry,
    hu: np.ndarray | None,
) -> NodeMeasurement:
    node = labels[box] == label
    offset = np.array([s.start for s in box], dtype=float)
    indices = np.argwhere(node) + offset
    voxel_count = len(indices)
    centroid = geometry.index_to_physical(indices.mean(axis=0)[None, :])[0]
    axes = recist_axes(node, geometry.spacing_mm)
    k = axes.slice_index
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
    values = hu[box][node].astype(np.float64) if hu is not None else None
    return NodeMeasurement(
        node_index=label,
        voxel_count=voxel_count,
        volume_ml=voxel_count * geometry.voxel_volume_ml,
        centroid_mm=_xyz(centroid),
        long_axis_mm=axes.long_axis_mm,
        short_axis_mm=axes.short_axis_mm,
        measurement_slice_z_mm=float(slice_point[2]),
        max_diameter_3d_mm=max_diameter_3d(node, geometry.spacing_mm),
        bbox_min_mm=_xyz(physical_corners.min(axis=0)),
        bbox_max_mm=_xyz(physical_corners.max(axis=0)),
        mean_hu=float(values.mean()) if values is not None else None,
        std_hu=float(values.std()) if values is not None else None,
    )


def _xyz(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))

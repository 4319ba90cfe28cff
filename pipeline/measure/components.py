"""Split a node mask into nodes and give each one its size and position.

Nodes touching at a face, an edge or a corner are one node (26-connectivity,
SimpleITK's ``fullyConnected``). Nodes are numbered from 1 by decreasing voxel
count, ties broken by position, so the numbering is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from pipeline.dicom.volume import Geometry, mask_to_sitk


@dataclass(frozen=True)
class NodeMeasurement:
    """One connected component of a node mask."""

    node_index: int
    voxel_count: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]


def label_nodes(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``[z, y, x]`` int32 labels, 0 background, 1..N nodes (largest first)."""
    components = sitk.ConnectedComponent(mask_to_sitk(mask, geometry), True)
    raster = sitk.GetArrayFromImage(components).astype(np.int32)
    n = int(raster.max())
    if n == 0:
        return raster
    # ConnectedComponent numbers components in raster order of their first voxel;
    # a stable sort by decreasing size keeps that order among equal sizes.
    counts = np.bincount(raster.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-counts, kind="stable")
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[order + 1] = np.arange(1, n + 1, dtype=np.int32)
    return remap[raster]


def measure_nodes(mask: np.ndarray, geometry: Geometry) -> list[NodeMeasurement]:
    """Measure every 26-connected node of ``mask`` on ``geometry``."""
    if mask.shape != geometry.size_zyx:
        raise ValueError(f"mask shape {mask.shape} does not match grid {geometry.size_zyx}")
    labels = label_nodes(mask, geometry)
    n_nodes = int(labels.max())
    if n_nodes == 0:
        return []
    counts = np.bincount(labels.ravel(), minlength=n_nodes + 1)
    coords = np.nonzero(labels)
    index_sums = np.stack(
        [np.bincount(labels[coords], weights=axis, minlength=n_nodes + 1) for axis in coords],
        axis=1,
    )
    mean_index = index_sums[1:] / counts[1:, None]
    centroids = geometry.index_to_physical(mean_index)
    return [
        NodeMeasurement(
            node_index=i + 1,
            voxel_count=int(counts[i + 1]),
            volume_ml=float(counts[i + 1]) * geometry.voxel_volume_ml,
            centroid_mm=tuple(float(c) for c in centroids[i]),  # type: ignore[arg-type]
        )
        for i in range(n_nodes)
    ]

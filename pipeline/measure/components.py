"""Split a node mask into nodes.

Nodes touching at a face, an edge or a corner are one node (26-connectivity,
SimpleITK's ``fullyConnected``). Nodes are numbered from 1 by decreasing voxel
count; equal sizes keep raster order of their first voxel, so the numbering is
reproducible.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from pipeline.dicom.volume import Geometry, mask_to_sitk


def label_nodes(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``[z, y, x]`` labels, 0 background, 1..N nodes (largest first); uint16 when N allows."""
    components = sitk.ConnectedComponent(mask_to_sitk(mask, geometry), True)
    raster = sitk.GetArrayViewFromImage(components)
    n = int(raster.max())
    if n == 0:
        return np.zeros(raster.shape, dtype=np.uint16)
    # ConnectedComponent numbers components in raster order of their first voxel;
    # a stable sort by decreasing size keeps that order among equal sizes.
    counts = np.bincount(raster.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-counts, kind="stable")
    dtype = np.uint16 if n < np.iinfo(np.uint16).max else np.int32
    remap = np.zeros(n + 1, dtype=dtype)
    remap[order + 1] = np.arange(1, n + 1, dtype=dtype)
    return remap[raster]

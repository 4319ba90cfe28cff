"""Split a node mask into nodes.

Nodes touching at a face, an edge or a corner are one node (26-connectivity,
SimpleITK's ``fullyConnected``). Nodes are numbered from 1 by decreasing voxel
count; equal sizes keep raster order of their first voxel, so the numbering is
reproducible.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.dicom.volume import Geometry
from pipeline.errors import MeasurementError

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def label_nodes(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``[z, y, x]`` labels, 0 background, 1..N nodes (largest first); uint16 when N allows.

    scipy labels into a uint16 array when the components fit (a 512 x 512 x 556 series: 290 MB,
    where SimpleITK's UInt32 components plus a UInt8 copy of the mask took 725 MB more), numbering
    components in raster order of their first voxel exactly as SimpleITK's fully connected
    ``ConnectedComponent`` does (a test keeps the two equal).
    """
    if mask.shape != tuple(geometry.size_zyx):
        raise MeasurementError(f"mask shape {mask.shape} does not match grid {tuple(geometry.size_zyx)}")
    raster = np.zeros(mask.shape, dtype=np.uint16)
    try:
        n = int(ndimage.label(mask, structure=_CONNECTIVITY_26, output=raster))
    except RuntimeError:  # more components than uint16 holds
        raster, n = ndimage.label(mask, structure=_CONNECTIVITY_26)
        n = int(n)
    if n == 0:
        return raster.astype(np.uint16, copy=False)
    # components come in raster order of their first voxel; a stable sort by decreasing size keeps
    # that order among equal sizes
    counts = np.bincount(raster.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-counts, kind="stable")
    dtype = np.uint16 if n < np.iinfo(np.uint16).max else np.int32
    remap = np.zeros(n + 1, dtype=dtype)
    remap[order + 1] = np.arange(1, n + 1, dtype=dtype)
    return remap[raster]

"""Split a node mask into nodes.

Nodes touching at a face, an edge or a corner are one node (26-connectivity,
SimpleITK's ``fullyConnected``). Nodes are numbered from 1 by decreasing voxel
count; equal sizes keep raster order of their first voxel, so the numbering is
reproducible.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import MeasurementError
from pipeline.geometry import Geometry

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def label_nodes(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``[z, y, x]`` labels, 0 background, 1..N nodes (largest first); uint16 when N allows.

    scipy labels into a uint16 array when the components fit (a 512 x 512 x 556 series: 290 MB,
    where SimpleITK's UInt32 components plus a UInt8 copy of the mask took 725 MB more), numbering
    components in raster order of their first voxel exactly as SimpleITK's fully connected
    ``ConnectedComponent`` does (a test keeps the two equal). Only the box around the foreground
    is labelled, counted and renumbered: the mediastinum is a small part of a CT.
    """
    from scipy import ndimage  # here, not at the top: the job's launcher imports this module

    if mask.shape != tuple(geometry.size_zyx):
        raise MeasurementError(f"mask shape {mask.shape} does not match grid {tuple(geometry.size_zyx)}")
    raster = np.zeros(mask.shape, dtype=np.uint16)
    box = _foreground_box(mask)
    if box is None:
        return raster
    # only the box around the foreground is labelled (raster order inside it is the volume's)
    try:
        n = int(ndimage.label(mask[box], structure=_CONNECTIVITY_26, output=raster[box]))
    except RuntimeError:  # more components than uint16 holds
        inside, n = ndimage.label(mask[box], structure=_CONNECTIVITY_26)
        raster = np.zeros(mask.shape, dtype=inside.dtype)
        raster[box] = inside
        n = int(n)
    if n <= 1:
        return raster
    # components come in raster order of their first voxel; a stable sort by decreasing size keeps
    # that order among equal sizes. Counted and renumbered a block of slices at a time: bincount and
    # indexing cast to 8-byte integers, which on the whole volume would cost 8 bytes per voxel.
    counts = np.zeros(n + 1, dtype=np.int64)
    for block in _slice_blocks(raster[box]):
        counts += np.bincount(block.ravel(), minlength=n + 1)
    order = np.argsort(-counts[1:], kind="stable")
    if np.array_equal(order, np.arange(n)):
        return raster
    remap = np.zeros(n + 1, dtype=raster.dtype)
    remap[order + 1] = np.arange(1, n + 1, dtype=raster.dtype)
    for block in _slice_blocks(raster[box]):
        block[...] = remap[block]
    return raster


def _foreground_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest box holding every non-zero voxel of ``mask``, or None when there is none."""
    along_z = np.flatnonzero(mask.any(axis=(1, 2)))
    if along_z.size == 0:
        return None
    z = slice(int(along_z[0]), int(along_z[-1]) + 1)
    along_y = np.flatnonzero(mask[z].any(axis=(0, 2)))
    along_x = np.flatnonzero(mask[z].any(axis=(0, 1)))
    return (
        z,
        slice(int(along_y[0]), int(along_y[-1]) + 1),
        slice(int(along_x[0]), int(along_x[-1]) + 1),
    )


def _slice_blocks(volume: np.ndarray, max_voxels: int = 1 << 23) -> list[np.ndarray]:
    """Views of ``volume`` a few slices thick (at most ``max_voxels`` each, at least one slice)."""
    per_slice = max(1, int(np.prod(volume.shape[1:])))
    step = max(1, max_voxels // per_slice)
    return [volume[z : z + step] for z in range(0, volume.shape[0], step)]

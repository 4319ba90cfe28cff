"""Training labels from an expert SEG: what nnU-Net learns, and what it must not learn.

A fully annotated case marks every mediastinal node: voxels outside its SEG are background (0).
A partially annotated case marks some nodes and says nothing about the rest, so an unlabelled
voxel there may be a node nobody drew. Teaching it as background would teach the network to miss
nodes; nnU-Net v2's ignore label leaves such voxels out of the loss. In partial cases the SEG's
voxels are 1, voxels that cannot be lymph node (the *known background* rule) are 0, and every
other voxel is the ignore label (2).

Known-background rules (``--partial-background``):

- ``hu`` (the default): a voxel is known background when its HU is below ``air_below_hu`` (air,
  aerated lung: lymph nodes are soft tissue, about 20 to 60 HU, a fatty hilum about -100 HU),
  above ``bone_above_hu`` (cortical and dense trabecular bone; contrast-filled vessels stay below
  it, a densely calcified node may not: the threshold is high for that reason, and adjustable), or
  outside the body: a voxel of at least ``air_below_hu`` that
  is not in the largest 26-connected component of such voxels (the table, blankets, cables, a
  separate arm). The expert's voxels are 1 whatever their HU.
- ``none``: only the expert's voxels are labelled (1); everything else is ignored.

Arrays are ``[z, y, x]``; the work is done a few slices at a time where it can be, so that the
largest LNQ series (512 x 512 x 556) needs one uint8 label volume, one bool volume and one uint16
component volume beside the CT, never a full-size 8-byte temporary.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.training.settings import (
    BACKGROUND,
    IGNORE,
    LYMPH_NODE,
    BackgroundRule,
    KnownBackground,
    is_partial,
)

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)
_BLOCK_VOXELS = 1 << 23
"""Voxels handled at a time by the slice-wise steps (about 8 M: a few 512 x 512 slices)."""


def training_labels(
    reference: np.ndarray, hu: np.ndarray, *, annotation: str | None, background: KnownBackground
) -> np.ndarray:
    """The uint8 ``[z, y, x]`` label volume of one case: 0/1 for a full annotation; 0/1/2 (see the
    module) for a partial one."""
    if reference.shape != hu.shape:
        raise ValueError(f"reference mask shape {reference.shape} differs from the CT's {hu.shape}")
    if not is_partial(annotation):
        labels = np.zeros(reference.shape, dtype=np.uint8)
        for z in _blocks(reference.shape):
            labels[z][reference[z]] = LYMPH_NODE
        return labels
    labels = np.full(reference.shape, IGNORE, dtype=np.uint8)
    if background.rule == BackgroundRule.HU:
        mark_known_background(labels, hu, background)
    for z in _blocks(reference.shape):
        labels[z][reference[z].astype(bool, copy=False)] = LYMPH_NODE  # the expert wins over any rule
    return labels


def mark_known_background(labels: np.ndarray, hu: np.ndarray, background: KnownBackground) -> None:
    """Set ``labels`` to 0 wherever the ``hu`` rule of ``background`` says no node can be."""
    dense = np.empty(hu.shape, dtype=bool)
    for z in _blocks(hu.shape):
        np.greater_equal(hu[z], background.air_below_hu, out=dense[z])
    body, components = _largest_component(dense)
    for z in _blocks(hu.shape):
        known = ~dense[z]  # air and lung
        known |= hu[z] > background.bone_above_hu
        if components is not None:
            known |= dense[z] & (components[z] != body)  # tissue-dense but not the body
        labels[z][known] = BACKGROUND


def _largest_component(dense: np.ndarray) -> tuple[int, np.ndarray | None]:
    """The label of the largest 26-connected component of ``dense`` and the component volume
    (uint16 when the components fit, as in ``pipeline.measure.components``); (0, None) when
    there is at most one component (nothing lies outside the body)."""
    from scipy import ndimage  # imported where used: the launcher imports this package

    components = np.zeros(dense.shape, dtype=np.uint16)
    try:
        n = int(ndimage.label(dense, structure=_CONNECTIVITY_26, output=components))
    except RuntimeError:  # more components than uint16 holds
        labelled, count = ndimage.label(dense, structure=_CONNECTIVITY_26)
        components, n = labelled, int(count)
    if n <= 1:
        return 0, None
    counts = np.zeros(n + 1, dtype=np.int64)
    for z in _blocks(dense.shape):  # bincount casts to 8-byte integers: a few slices at a time
        counts += np.bincount(components[z].ravel(), minlength=n + 1)
    return int(np.argmax(counts[1:])) + 1, components


@dataclass(frozen=True)
class LabelCounts:
    """Voxels of each label value in one case."""

    background: int
    lymph_node: int
    ignore: int

    @classmethod
    def of(cls, labels: np.ndarray) -> LabelCounts:
        counts = np.zeros(3, dtype=np.int64)
        for z in _blocks(labels.shape):
            counts += np.bincount(labels[z].ravel(), minlength=3)[:3]
        return cls(background=int(counts[0]), lymph_node=int(counts[1]), ignore=int(counts[2]))


def _blocks(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices along z covering a volume of ``shape`` a few slices at a time."""
    per_slice = max(1, int(np.prod(shape[1:])))
    step = max(1, _BLOCK_VOXELS // per_slice)
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))

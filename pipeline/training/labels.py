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
  outside the body: a voxel of at least ``air_below_hu`` that is not in the body, the largest
  26-connected component of such voxels (found on a grid pooled 2 x 2 x 2: see
  :func:`_pooled_body`), such as the table, blankets, cables, a separate arm. The expert's voxels
  are 1 whatever their HU.
- ``none``: only the expert's voxels are labelled (1); everything else is ignored.

Arrays are ``[z, y, x]``; the work is done a few slices at a time where it can be, so that the
largest LNQ series (512 x 512 x 556) needs one uint8 label volume beside the CT and its mask, plus
the pooled grid's (an eighth of the voxels), never a full-size temporary.
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
    body = _pooled_body(hu, background.air_below_hu)
    for z in _blocks(hu.shape, multiple_of=POOL):
        dense = hu[z] >= background.air_below_hu
        known = ~dense  # air and lung
        known |= hu[z] > background.bone_above_hu
        if body is not None:  # tissue-dense, but not the body
            zi, yi, xi = (
                np.arange(s.start, s.stop) // POOL for s in (z, slice(0, hu.shape[1]), slice(0, hu.shape[2]))
            )
            known |= dense & ~body[zi[:, None, None], yi[None, :, None], xi[None, None, :]]
        labels[z][known] = BACKGROUND


POOL = 2
"""The body is found on a grid pooled ``POOL`` x ``POOL`` x ``POOL``: 8 times fewer voxels to label
(the connected components of a 512 x 512 x 556 CT took most of a case's label time at full size)."""


def _pooled_body(hu: np.ndarray, air_below_hu: float) -> np.ndarray | None:
    """The body on the pooled grid: the largest 26-connected component of pooled voxels that hold
    any voxel of at least ``air_below_hu``; None when there is at most one component.

    Pooling can only join components, never split one (two neighbouring voxels fall in the same
    or in neighbouring pooled voxels), so the whole body lies in the pooled body, and what lies
    outside it is outside the body at full resolution too; material within about two voxels of
    the body counts as body, and is ignored rather than taught as background."""
    from scipy import ndimage  # imported where used: the launcher imports this package

    shape = tuple(-(-n // POOL) for n in hu.shape)
    pooled = np.zeros(shape, dtype=bool)
    _, rows, columns = hu.shape
    for z in _blocks(hu.shape, multiple_of=POOL):
        dense = np.zeros(
            (-(-(z.stop - z.start) // POOL) * POOL, shape[1] * POOL, shape[2] * POOL), dtype=bool
        )
        np.greater_equal(hu[z], air_below_hu, out=dense[: z.stop - z.start, :rows, :columns])
        size = (dense.shape[0] // POOL, POOL, shape[1], POOL, shape[2], POOL)
        pooled[z.start // POOL : z.start // POOL + size[0]] = dense.reshape(size).any(axis=(1, 3, 5))
    components = np.zeros(shape, dtype=np.uint16)
    try:
        n = int(ndimage.label(pooled, structure=_CONNECTIVITY_26, output=components))
    except RuntimeError:  # more components than uint16 holds
        labelled, count = ndimage.label(pooled, structure=_CONNECTIVITY_26)
        components, n = labelled, int(count)
    if n <= 1:
        return None
    counts = np.zeros(n + 1, dtype=np.int64)
    for z in _blocks(shape):  # bincount casts to 8-byte integers: a few slices at a time
        counts += np.bincount(components[z].ravel(), minlength=n + 1)
    body = int(np.argmax(counts[1:])) + 1
    return components == body


@dataclass(frozen=True)
class LabelCounts:
    """Voxels of each label value in one case."""

    background: int
    lymph_node: int
    ignore: int

    @classmethod
    def of(cls, labels: np.ndarray) -> LabelCounts:
        background = lymph_node = 0
        for z in _blocks(labels.shape):  # comparisons, not bincount (which casts to 8 bytes a voxel)
            background += int(np.count_nonzero(labels[z] == BACKGROUND))
            lymph_node += int(np.count_nonzero(labels[z] == LYMPH_NODE))
        return cls(background=background, lymph_node=lymph_node, ignore=labels.size - background - lymph_node)


def _blocks(shape: tuple[int, ...], *, multiple_of: int = 1) -> Iterator[slice]:
    """Slices along z covering a volume of ``shape`` a few slices at a time (each block a multiple
    of ``multiple_of`` slices thick, but the last)."""
    per_slice = max(1, int(np.prod(shape[1:])))
    step = max(multiple_of, _BLOCK_VOXELS // per_slice // multiple_of * multiple_of)
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))

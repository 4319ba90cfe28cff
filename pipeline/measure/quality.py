"""Per-node quality flags: what a reader should not take at face value.

The tables keep every node; the flag says which ones are below what the image can
resolve (``speck``) or larger than a single mediastinal node can be (``implausible``),
so that reports and queries can leave them out and say so. The limits and their
sources are in ``docs/measurements.md`` ("Quality flags").

- ``speck``: fewer than :data:`MIN_NODE_VOXELS` voxels, or a short axis below one
  in-plane pixel (the larger of the two pixel spacings): the node is one pixel thin on
  its measurement slice, so its short axis is below the image's resolution and the
  measurement's error (up to about one pixel) is as large as the value.
- ``implausible``: a short axis above :data:`MAX_PLAUSIBLE_SHORT_AXIS_MM`: wider, in its
  narrowest in-plane direction, than the 10 cm longest diameter at which the Lugano
  classification already calls a whole nodal mass "bulky"; a mask that large is a
  conglomerate or an organ, vessel or body wall, not one lymph node.
"""

from __future__ import annotations

import enum

MIN_NODE_VOXELS = 8
"""The fewest voxels of an object at least two voxels across along x, y and z (2 x 2 x 2)."""

MAX_PLAUSIBLE_SHORT_AXIS_MM = 100.0
"""Lugano classification (Cheson et al., J Clin Oncol 2014;32:3059-68): a single nodal mass of
10 cm or more in its longest diameter is "bulky" disease."""


class NodeQuality(str, enum.Enum):
    """The ``nodes.quality_flag`` column."""

    OK = "ok"
    SPECK = "speck"
    IMPLAUSIBLE = "implausible"

    def __str__(self) -> str:
        return self.value


def node_quality(*, voxel_count: int, short_axis_mm: float, pixel_mm: float) -> NodeQuality:
    """The flag of one node; ``pixel_mm`` is the larger in-plane pixel spacing of its grid."""
    if voxel_count < MIN_NODE_VOXELS or short_axis_mm < pixel_mm:
        return NodeQuality.SPECK
    if short_axis_mm > MAX_PLAUSIBLE_SHORT_AXIS_MM:
        return NodeQuality.IMPLAUSIBLE
    return NodeQuality.OK

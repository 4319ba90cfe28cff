"""Per-node quality flags: specks below the image's resolution, nodes no mediastinal node can be."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.geometry import Geometry
from pipeline.measure.nodes import measure_nodes
from pipeline.measure.quality import (
    MAX_PLAUSIBLE_SHORT_AXIS_MM,
    MIN_NODE_VOXELS,
    NodeQuality,
    node_quality,
)

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_limits_decide_the_flag() -> None:
    assert node_quality(voxel_count=MIN_NODE_VOXELS - 1, short_axis_mm=5.0, pixel_mm=0.8) == NodeQuality.SPECK
    assert node_quality(voxel_count=500, short_axis_mm=0.4, pixel_mm=0.81) == NodeQuality.SPECK
    assert node_quality(voxel_count=MIN_NODE_VOXELS, short_axis_mm=0.81, pixel_mm=0.81) == NodeQuality.OK
    assert node_quality(voxel_count=10**6, short_axis_mm=134.8, pixel_mm=0.8) == NodeQuality.IMPLAUSIBLE
    at_limit = node_quality(voxel_count=10**6, short_axis_mm=MAX_PLAUSIBLE_SHORT_AXIS_MM, pixel_mm=0.8)
    assert at_limit == NodeQuality.OK


def test_measured_nodes_carry_their_flag() -> None:
    """One voxel, a one-pixel-thin line, an ordinary node and a body-wall-sized slab, measured."""
    spacing = (0.8, 0.8, 2.5)
    mask = np.zeros((12, 200, 200), dtype=bool)
    mask[2, 5, 5] = True  # one voxel: "measured" at under a pixel
    mask[2:8, 20, 10:40] = True  # a line one pixel wide, 180 voxels
    z, y, x = np.indices(mask.shape)
    mask |= ((x - 60) * 0.8) ** 2 + ((y - 60) * 0.8) ** 2 + ((z - 6) * 2.5) ** 2 <= 8.0**2  # 16 mm node
    mask[1:11, 70:200, 70:200] = True  # 104 mm across in every in-plane direction
    geometry = Geometry(mask.shape, (0.0, 0.0, 0.0), spacing, IDENTITY)
    flags = {n.voxel_count: (n.quality_flag, n.short_axis_mm) for n in measure_nodes(mask, geometry)}
    assert flags[1][0] == NodeQuality.SPECK and flags[1][1] < 0.8
    assert flags[180][0] == NodeQuality.SPECK and flags[180][1] < 0.8
    node = next(v for k, v in flags.items() if 1000 < k < 5000)
    assert node[0] == NodeQuality.OK and node[1] == pytest.approx(16.0, abs=0.8)
    slab = flags[10 * 130 * 130]
    assert slab[0] == NodeQuality.IMPLAUSIBLE and slab[1] > MAX_PLAUSIBLE_SHORT_AXIS_MM

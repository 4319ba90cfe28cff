from __future__ import annotations

import pytest

from pipeline.measure.burden import series_burden
from pipeline.measure.nodes import NodeMeasurement


def _node(i: int, long_mm: float, short_mm: float, volume_ml: float = 1.0) -> NodeMeasurement:
    zero = (0.0, 0.0, 0.0)
    ends = (zero, zero)
    return NodeMeasurement(
        i, 10, volume_ml, zero, long_mm, short_mm, 0.0, long_mm, zero, zero, None, None, ends, ends
    )


def test_burden_figures() -> None:
    nodes = [
        _node(1, 30, 20),
        _node(2, 25, 16),
        _node(3, 20, 12),
        _node(4, 14, 10),
        _node(5, 12, 9.9),
        _node(6, 10, 8),
        _node(7, 9, 7, volume_ml=0.5),
    ]
    b = series_burden(nodes)
    assert b.n_nodes == 7
    assert b.n_nodes_short_axis_ge_10mm == 4  # 20, 16, 12, 10
    assert b.sum_short_axis_pathological_mm == pytest.approx(20 + 16 + 12 + 10)
    assert b.total_volume_ml == pytest.approx(6.5)
    # SPD: the six largest products; 9 x 7 = 63 is the smallest and is left out
    assert b.spd_mm2 == pytest.approx(600 + 400 + 240 + 140 + 12 * 9.9 + 80)


def test_spd_picks_largest_products_not_longest_axes() -> None:
    nodes = [_node(i, 20, 1) for i in range(6)] + [_node(9, 15, 15)]
    assert series_burden(nodes).spd_mm2 == pytest.approx(225 + 5 * 20)


def test_empty_series() -> None:
    b = series_burden([])
    assert (b.n_nodes, b.total_volume_ml, b.spd_mm2) == (0, 0.0, 0.0)

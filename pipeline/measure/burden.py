"""Node burden of one series and source: counts, volume, RECIST sums, Lugano SPD."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.measure.categories import is_pathological
from pipeline.measure.nodes import NodeMeasurement

SPD_MAX_NODES = 6


@dataclass(frozen=True)
class Burden:
    """Per series and source. ``spd_mm2``: sum of long x short axis of up to 6 nodes with
    the largest products (Lugano); ``sum_short_axis_pathological_mm``: short axes >= 10 mm."""

    n_nodes: int
    n_nodes_short_axis_ge_10mm: int
    total_volume_ml: float
    sum_short_axis_pathological_mm: float
    spd_mm2: float


def series_burden(nodes: Sequence[NodeMeasurement]) -> Burden:
    pathological = [n.short_axis_mm for n in nodes if is_pathological(n.short_axis_mm)]
    products = sorted((n.long_axis_mm * n.short_axis_mm for n in nodes), reverse=True)
    return Burden(
        n_nodes=len(nodes),
        n_nodes_short_axis_ge_10mm=len(pathological),
        total_volume_ml=float(sum(n.volume_ml for n in nodes)),
        sum_short_axis_pathological_mm=float(sum(pathological)),
        spd_mm2=float(sum(products[:SPD_MAX_NODES])),
    )

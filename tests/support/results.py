"""Stored series results made in tests and benchmarks: a series row and its node rows, as a
reference run would keep them."""

from __future__ import annotations

import datetime as dt

from pipeline.outputs.rows import OutcomeRows
from pipeline.outputs.schemas import NODES_SCHEMA, SERIES_SCHEMA


def synthetic_outcome(i: int, *, n_nodes: int = 9, status: str = "ok") -> OutcomeRows:
    """Series ``i`` (UID ``1.2.826.0.1.3680043.10.999.<i+1>``) with ``n_nodes`` reference nodes."""
    uid = f"1.2.826.0.1.3680043.10.999.{i + 1}"
    series = dict.fromkeys(SERIES_SCHEMA.names)
    series.update(
        ct_series_instance_uid=uid,
        patient_id=f"case_{i:04d}",
        status=status,
        model="reference",
        pipeline_version="0.1.0",
        processed_at=dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc),
        n_slices=108,
        total_s=1.0,
    )
    nodes = []
    for k in range(n_nodes):
        node = {name: 1.0 for name in NODES_SCHEMA.names}
        node.update(
            ct_series_instance_uid=uid,
            patient_id=f"case_{i:04d}",
            model="reference",
            source="reference",
            node_index=k + 1,
            voxel_count=100 + k,
            recist_category="normal",
            quality_flag="ok",
            tracking_uid=f"2.25.{i}{k}",
        )
        nodes.append(node)
    return OutcomeRows(series=series, nodes=nodes, errors=[])

"""Cohort rows for phantoms, and cohort files, as ``lnq cohort`` writes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.demo.phantoms import Phantom
from pipeline.outputs.schemas import COHORT_SCHEMA

Where = TypeVar("Where")


def cohort_row(
    phantom: Phantom, *, ct_url: str, seg_url: str | None, **overrides: object
) -> dict[str, object]:
    """A cohort row (the ``lnq cohort`` contract) for a phantom."""
    row: dict[str, object] = {
        "patient_id": phantom.patient_id,
        "study_instance_uid": phantom.study_uid,
        "ct_series_instance_uid": phantom.series_uid,
        "ct_series_url": ct_url,
        "seg_series_instance_uid": phantom.seg_series_uid if seg_url else None,
        "seg_series_url": seg_url,
        "annotation": phantom.annotation,
        "ct_instance_count": int(phantom.hu.shape[0]),
        "ct_size_mb": 1.0,
    }
    row.update(overrides)
    return row


def write_cohort(where: Where, rows: Sequence[dict[str, Any]]) -> Where:
    """Write ``rows`` as a cohort Parquet file (``COHORT_SCHEMA``) to ``where``, a path or a binary
    file object; returns ``where``."""
    pq.write_table(pa.Table.from_pylist(list(rows), schema=COHORT_SCHEMA), where)
    return where

"""Cohort rows for phantoms, as ``lnq cohort`` writes them."""

from __future__ import annotations

from pipeline.demo.phantoms import Phantom


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

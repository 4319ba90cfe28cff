"""Cohort rows are validated where they enter, before anything reaches a path."""

from __future__ import annotations

import math

import pytest

from pipeline.cohort.rows import validate_cohort_row
from pipeline.errors import CohortError

GOOD = {
    "patient_id": "case_0002",
    "study_instance_uid": "1.2.3.4",
    "ct_series_instance_uid": "1.2.3.5",
    "ct_series_url": "s3://idc-open-data/e1726811-c462-43fd-84f5-2c6a9bef8e6b/*",
    "seg_series_instance_uid": "1.2.3.6",
    "seg_series_url": "s3://idc-open-data/d10fd222-4e7a-4231-99a1-2177a57b048b/*",
    "annotation": "full",
    "ct_instance_count": 134,
    "ct_size_mb": 70.5,
}


def test_good_row() -> None:
    row = validate_cohort_row(GOOD)
    assert row.ct_series_instance_uid == "1.2.3.5"
    assert row.ct_instance_count == 134


def test_missing_values_become_none() -> None:
    row = validate_cohort_row(
        {
            **GOOD,
            "seg_series_instance_uid": None,
            "seg_series_url": float("nan"),
            "annotation": None,
            "ct_instance_count": math.nan,
        }
    )
    assert row.seg_series_url is None and row.ct_instance_count is None


def test_local_folder_is_accepted() -> None:
    assert (
        validate_cohort_row({**GOOD, "ct_series_url": "/data/ct/case_2"}).ct_series_url == "/data/ct/case_2"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ct_series_instance_uid", "../../outside", "ct_series_instance_uid is not a DICOM UID"),
        ("ct_series_instance_uid", None, "ct_series_instance_uid is not a DICOM UID"),
        ("study_instance_uid", "1.2.abc", "study_instance_uid is not a DICOM UID"),
        ("seg_series_instance_uid", "1.2.03", "seg_series_instance_uid is not a DICOM UID"),
        ("ct_series_url", "http://example.com/x", "not a bucket folder URL"),
        ("ct_series_url", "s3://idc-open-data/../other/*", "not a bucket folder URL"),
        ("ct_series_url", "data/../../etc", "climbs out"),
        ("ct_series_url", None, "ct_series_url is missing"),
        ("annotation", "some", "annotation 'some' is not one of"),
        ("ct_instance_count", 0, "not a positive integer"),
    ],
)
def test_rejections(field: str, value: object, message: str) -> None:
    with pytest.raises(CohortError, match=message):
        validate_cohort_row({**GOOD, field: value})

"""Cohort rows: the contract between cohort selection and processing.

Cohort values reach file paths and subprocess arguments, so every row is
validated here, where it enters, before anything is fetched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.enums import Annotation
from pipeline.errors import CohortError
from pipeline.locations import is_remote
from pipeline.uids import uid_problem

ANNOTATIONS = tuple(a.value for a in Annotation)
# IDC: s3://idc-open-data/<crdc_series_uuid>/*  (also gs:// buckets of the same layout)
_BUCKET_URL_RE = re.compile(r"^(s3|gs)://[a-z0-9][a-z0-9.\-_]{1,221}[a-z0-9](/[A-Za-z0-9._\-]+)+/(\*)?$")


@dataclass(frozen=True)
class CohortRow:
    """One CT series to process, with its expert SEG when the cohort has one."""

    patient_id: str
    study_instance_uid: str
    ct_series_instance_uid: str
    ct_series_url: str
    seg_series_instance_uid: str | None = None
    seg_series_url: str | None = None
    annotation: str | None = None
    ct_instance_count: int | None = None
    ct_size_mb: float | None = None


def _clean(value: Any) -> Any:
    """Map pandas/pyarrow missing values (None, NaN, NA) to None."""
    if value is None:
        return None
    try:
        if isinstance(value, float) and math.isnan(value):
            return None
    except TypeError:
        pass
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def check_series_url(url: str, *, what: str, series_uid: str) -> str:
    """A bucket URL of IDC's layout, or a local path; anything else is refused."""
    if not isinstance(url, str) or not url:
        raise CohortError(f"{what} is missing", series_uid=series_uid)
    if is_remote(url):
        if not _BUCKET_URL_RE.match(url) or "/../" in url or "/./" in url:
            raise CohortError(
                f"{what} {url!r} is not a bucket folder URL like s3://bucket/<uuid>/*",
                series_uid=series_uid,
            )
        return url
    if any(part == ".." for part in re.split(r"[\\/]", url)):
        raise CohortError(f"{what} {url!r} climbs out of its folder ('..')", series_uid=series_uid)
    return url


def validate_cohort_row(raw: Mapping[str, Any]) -> CohortRow:
    """Check one raw cohort mapping and return it as a :class:`CohortRow`."""
    values = {k: _clean(raw.get(k)) for k in CohortRow.__dataclass_fields__}
    ct_uid = values["ct_series_instance_uid"]
    label = str(ct_uid) if ct_uid is not None else None
    problem = uid_problem(ct_uid)
    if problem:
        raise CohortError(f"ct_series_instance_uid is not a DICOM UID: {problem}", series_uid=label)
    for name in ("study_instance_uid", "seg_series_instance_uid"):
        value = values[name]
        if value is None and name == "seg_series_instance_uid":
            continue
        problem = uid_problem(value)
        if problem:
            raise CohortError(f"{name} is not a DICOM UID: {problem}", series_uid=label)
    check_series_url(values["ct_series_url"], what="ct_series_url", series_uid=ct_uid)
    if values["seg_series_url"] is not None:
        check_series_url(values["seg_series_url"], what="seg_series_url", series_uid=ct_uid)
    if values["annotation"] not in (None, *ANNOTATIONS):
        raise CohortError(
            f"annotation {values['annotation']!r} is not one of {ANNOTATIONS} or null",
            series_uid=ct_uid,
        )
    count = values["ct_instance_count"]
    if count is not None:
        if int(count) != count or int(count) < 1:
            raise CohortError(f"ct_instance_count {count!r} is not a positive integer", series_uid=ct_uid)
        values["ct_instance_count"] = int(count)
    if values["ct_size_mb"] is not None:
        values["ct_size_mb"] = float(values["ct_size_mb"])
    values["patient_id"] = "" if values["patient_id"] is None else str(values["patient_id"])
    return CohortRow(**values)

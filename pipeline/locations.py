"""Where a path points: a local file or folder, or an object store (``gs://``, ``s3://``).

One test for it, used wherever a path may be either (outputs, cohorts, models, series URLs).
"""

from __future__ import annotations


def is_remote(path: str) -> bool:
    """A URL of an object store (a scheme before ``://``), not a local path."""
    return "://" in path


def is_gcs(path: object) -> bool:
    """A Cloud Storage URL (``gs://``)."""
    return isinstance(path, str) and path.startswith("gs://")


def is_bucket_url(path: object) -> bool:
    """A URL of one of the object stores the fetch copies from (``s3://`` or ``gs://``)."""
    return isinstance(path, str) and path.startswith(("s3://", "gs://"))

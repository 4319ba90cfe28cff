"""What a fetch may touch: which buckets, which endpoints, which object keys, which file names.

Series come from IDC's public buckets as ``s3://<bucket>/<crdc_series_uuid>/<crdc_instance_uuid>.dcm``.
Anything else is refused before a byte is copied, because s5cmd writes an object under its key
relative to the destination and does not refuse ``../`` in keys (an object named
``<uuid>/../../x`` would land outside the series folder), and because plain http lets any
byte be changed in transit without anyone noticing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.errors import FetchError

IDC_BUCKETS = ("idc-open-data", "idc-open-data-two", "idc-open-data-cr")
"""IDC's public buckets (idc-index 0.13.4, IDC v25); the same names exist on AWS and Google Cloud."""

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")
"""A plain path part: letters, digits, ``.``, ``_``, ``-``; not hidden, no ``..``, no glob characters."""

_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class SeriesLocation:
    """A series' folder in a bucket: ``s3://{bucket}/{prefix}`` with ``prefix`` ending in ``/``."""

    bucket: str
    prefix: str

    @property
    def listing_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}*"

    def object_url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def name_of(self, key_url: str) -> str | None:
        """The plain file name of a listed object directly in this folder, or None."""
        head = f"s3://{self.bucket}/{self.prefix}"
        if not key_url.startswith(head):
            return None
        name = key_url[len(head) :]
        return name if is_plain_name(name) else None


def is_plain_name(name: str) -> bool:
    """A file name safe to create in a folder as it is (no separator, no ``..``, not hidden)."""
    return bool(_PART.fullmatch(name)) and name not in (".", "..")


def parse_series_url(url: str, *, series_uid: str) -> SeriesLocation:
    """``s3://bucket/prefix/*`` (or ``gs://``, or without the ``*``) as a checked location."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("s3", "gs"):
        raise FetchError(f"not a bucket URL: {url!r} (expected s3://bucket/series/*)", series_uid=series_uid)
    bucket, _, path = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise FetchError(f"invalid bucket name {bucket!r} in {url!r}", series_uid=series_uid)
    path = path[:-1] if path.endswith("*") else path
    parts = path.rstrip("/").split("/") if path.rstrip("/") else []
    if not parts:
        raise FetchError(
            f"{url!r} names no series folder (it would copy the whole bucket)", series_uid=series_uid
        )
    bad = [p for p in parts if not is_plain_name(p)]
    if bad:
        raise FetchError(
            f"series URL {url!r} has an unsafe path part {bad[0]!r} (empty, '..', hidden, absolute or "
            "with characters other than letters, digits, '.', '_', '-')",
            series_uid=series_uid,
        )
    return SeriesLocation(bucket=bucket, prefix="/".join(parts) + "/")


def check_bucket(bucket: str, extra_buckets: Iterable[str], *, series_uid: str | None = None) -> None:
    """Only IDC's public buckets, plus those allowed explicitly (``--allow-bucket``)."""
    allowed = (*IDC_BUCKETS, *extra_buckets)
    if bucket not in allowed:
        raise FetchError(
            f"bucket {bucket!r} is not one of IDC's public buckets ({', '.join(IDC_BUCKETS)}); "
            f"allow {bucket} explicitly to fetch from it",
            series_uid=series_uid,
        )


def check_bucket_names(buckets: Iterable[str]) -> None:
    """Names given with ``--allow-bucket`` must be bucket names."""
    for bucket in buckets:
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise FetchError(f"allowed bucket {bucket!r} is not a valid bucket name")


def check_endpoint(endpoint_url: str, *, series_uid: str | None = None) -> None:
    """https, or plain http on loopback only (local test servers); anything else is refused."""
    parts = urlsplit(endpoint_url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host:
        if is_loopback(host):
            return
        raise FetchError(
            f"plain http endpoint {endpoint_url} refused: http has no integrity or authenticity in "
            "transit, so a flipped or replaced byte would change a result unnoticed; use https:// "
            "(http:// is accepted only on loopback, for local test servers)",
            series_uid=series_uid,
        )
    raise FetchError(f"endpoint {endpoint_url!r} is not an https:// URL", series_uid=series_uid)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

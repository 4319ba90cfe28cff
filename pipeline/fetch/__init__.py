"""Fetching series from IDC's public buckets."""

from pipeline.fetch.policy import IDC_BUCKETS, check_bucket, check_endpoint, parse_series_url
from pipeline.fetch.s5cmd import (
    AWS_ENDPOINT,
    GCS_ENDPOINT,
    FetchConfig,
    check_config,
    fetch_series,
    s5cmd_binary,
)

__all__ = [
    "AWS_ENDPOINT",
    "GCS_ENDPOINT",
    "IDC_BUCKETS",
    "FetchConfig",
    "check_bucket",
    "check_config",
    "check_endpoint",
    "fetch_series",
    "parse_series_url",
    "s5cmd_binary",
]

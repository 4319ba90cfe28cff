"""Fetching series from IDC's public buckets."""

from pipeline.fetch.s5cmd import AWS_ENDPOINT, GCS_ENDPOINT, FetchConfig, fetch_series, s5cmd_binary

__all__ = ["AWS_ENDPOINT", "GCS_ENDPOINT", "FetchConfig", "fetch_series", "s5cmd_binary"]

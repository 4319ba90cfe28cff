"""What a fetch may touch: bucket URLs, buckets, endpoints and object names."""

from __future__ import annotations

import re

import pytest

from pipeline.errors import FetchError
from pipeline.fetch.policy import (
    IDC_BUCKETS,
    SeriesLocation,
    check_bucket,
    check_endpoint,
    is_plain_name,
    parse_series_url,
)

SERIES = "a3b1c2d4-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    "url",
    [
        f"s3://idc-open-data/{SERIES}/*",
        f"s3://idc-open-data/{SERIES}/",
        f"s3://idc-open-data/{SERIES}",
        f"gs://idc-open-data/{SERIES}/*",
    ],
)
def test_idc_urls_name_one_series_folder(url: str) -> None:
    location = parse_series_url(url, series_uid="1.2.3")
    assert location == SeriesLocation(bucket="idc-open-data", prefix=f"{SERIES}/")
    assert location.listing_url == f"s3://idc-open-data/{SERIES}/*"
    assert location.object_url("x.dcm") == f"s3://idc-open-data/{SERIES}/x.dcm"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://idc-open-data/x/*", "not a bucket URL"),
        ("s3://Idc_Open/x/*", "invalid bucket name"),
        ("s3://idc-open-data", "names no series folder"),
        ("s3://idc-open-data/*", "names no series folder"),
        ("s3://idc-open-data/x/../y/*", "unsafe path part '..'"),
        ("s3://idc-open-data//x/*", "unsafe path part ''"),
        ("s3://idc-open-data/x/*.dcm", "unsafe path part"),
        ("s3://idc-open-data/x?/*", "unsafe path part"),
        ("s3://idc-open-data/.hidden/*", "unsafe path part"),
    ],
)
def test_unsafe_or_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(FetchError, match="series 1.2.3: .*" + re.escape(message)):
        parse_series_url(url, series_uid="1.2.3")


def test_listed_keys_map_to_plain_names_only() -> None:
    location = SeriesLocation(bucket="idc-open-data", prefix=f"{SERIES}/")
    head = f"s3://idc-open-data/{SERIES}/"
    assert location.name_of(head + "1.2.3.dcm") == "1.2.3.dcm"
    for bad in ("../../evil.dcm", "../x", "/abs.dcm", "sub/x.dcm", ".hidden", "..", "", "a b.dcm", "x\\y"):
        assert location.name_of(head + bad) is None, bad
    assert location.name_of(f"s3://idc-open-data/other/{SERIES}.dcm") is None
    assert location.name_of(f"s3://idc-open-data-two/{SERIES}/x.dcm") is None
    assert not is_plain_name("a" * 256) and is_plain_name("a" * 255)


def test_idc_buckets_pass_others_need_allowing() -> None:
    for bucket in IDC_BUCKETS:
        check_bucket(bucket, ())
    check_bucket("my-mirror", ("my-mirror",))
    with pytest.raises(FetchError, match="allow my-mirror explicitly to fetch from it"):
        check_bucket("my-mirror", ("other",))


def test_endpoint_rules() -> None:
    for ok in (
        "https://s3.amazonaws.com",
        "https://storage.googleapis.com",
        "http://127.0.0.1:5000",
        "http://localhost",
        "http://[::1]:1",
    ):
        check_endpoint(ok)
    for bad in ("http://s3.amazonaws.com", "http://192.168.1.10:9000", "http://localhost.evil.org"):
        with pytest.raises(FetchError, match="no integrity or authenticity in transit"):
            check_endpoint(bad)
    for bad in ("s3.amazonaws.com", "ftp://127.0.0.1", "https://"):
        with pytest.raises(FetchError, match="not an https:// URL"):
            check_endpoint(bad)

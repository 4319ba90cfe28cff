"""bench/_static_s3.py, the benchmarks' light S3 stand-in, serves what the job's fetch needs:
listings s5cmd pages through, whole and ranged reads with MD5 ETags, and nothing outside its folder."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest

from bench._static_s3 import _Objects, place_series, respond
from bench.harness import child_env, module_command
from pipeline.fetch.s5cmd import FetchConfig, fetch_series
from tests.support.s3 import BUCKET, free_port, start_server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("s3root")
    source = tmp_path_factory.mktemp("series")
    for i in range(1105):  # more than one page of 1,000 keys
        (source / f"f{i:04d}").write_bytes(f"slice {i} ".encode() * (i % 7 + 1))
    url = place_series(root, BUCKET, source)
    (root / "secret.txt").write_text("outside the bucket")
    port = free_port()
    proc, endpoint = start_server(
        module_command("bench._static_s3", str(root), str(port)), port, env=child_env()
    )
    yield root, source, url, endpoint
    proc.terminate()
    proc.wait()


def test_the_fetch_copies_a_series_of_more_than_one_page_and_checks_every_etag(
    served, tmp_path: Path
) -> None:
    root, source, url, endpoint = served
    folder = fetch_series(
        url,
        str(tmp_path / "ct"),
        series_uid="1.2.3",
        expected_count=1105,
        config=FetchConfig(endpoint_url=endpoint),
    )
    got = sorted(hashlib.md5(p.read_bytes()).hexdigest() for p in Path(folder).iterdir())
    want = sorted(hashlib.md5(p.read_bytes()).hexdigest() for p in source.iterdir())
    assert got == want


def test_ranges_heads_and_keys_outside_the_bucket(served) -> None:
    root, source, url, endpoint = served
    key = next(p for p in (root / BUCKET).rglob("*") if p.is_file()).relative_to(root / BUCKET).as_posix()
    data = (root / BUCKET / key).read_bytes()
    request = urllib.request.Request(f"{endpoint}/{BUCKET}/{key}", headers={"Range": "bytes=2-5"})
    with urllib.request.urlopen(request) as reply:
        assert reply.status == 206 and reply.read() == data[2:6]
        assert reply.headers["Content-Range"] == f"bytes 2-5/{len(data)}"
    with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}/{key}", method="HEAD")) as reply:
        assert reply.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        assert int(reply.headers["Content-Length"]) == len(data) and reply.read() == b""
    objects = _Objects(root)
    for target in (
        f"/{BUCKET}/../secret.txt",
        f"/{BUCKET}/%2e%2e/secret.txt",
        "/../secret.txt",
        "/secret.txt/x",
    ):
        assert respond(objects, "GET", target, {})[0] == 404, target
    assert respond(objects, "PUT", f"/{BUCKET}/new", {})[0] == 405


def test_listings_page_and_group_as_s3_does(served) -> None:
    root, _, url, _ = served
    objects = _Objects(root)
    series = url.split("/")[3]
    status, _, body = respond(objects, "GET", f"/{BUCKET}?list-type=2&delimiter=/", {})
    assert status == 200 and f"<CommonPrefixes><Prefix>{series}/</Prefix></CommonPrefixes>" in body.decode()
    assert "<Contents>" not in body.decode()
    first = respond(objects, "GET", f"/{BUCKET}?list-type=2&prefix={series}/&max-keys=1000", {})[2].decode()
    assert first.count("<Contents>") == 1000 and "<IsTruncated>true</IsTruncated>" in first
    token = first.split("<NextContinuationToken>")[1].split("</")[0]
    second = respond(objects, "GET", f"/{BUCKET}?list-type=2&prefix={series}/&continuation-token={token}", {})
    assert second[2].decode().count("<Contents>") == 105
    outside = respond(objects, "GET", f"/{BUCKET}?list-type=2&prefix=../", {})[2].decode()
    assert "<KeyCount>0</KeyCount>" in outside and "secret" not in outside

"""Fetching with the real s5cmd from a local moto S3 server, unsigned."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.errors import FetchError
from pipeline.fetch import s5cmd as s5
from pipeline.fetch.s5cmd import FetchConfig, fetch_series


def _config(endpoint: str, **kw: object) -> FetchConfig:
    return FetchConfig(endpoint_url=endpoint, **{"attempts": 2, "backoff_s": 0.01, **kw})  # type: ignore[arg-type]


def test_copies_every_instance_unsigned(phantom, upload_series, s3_endpoint: str, tmp_path: Path) -> None:
    url = upload_series(phantom.ct_dir)
    folder = fetch_series(
        url,
        str(tmp_path / "ct"),
        series_uid=phantom.series_uid,
        expected_count=40,
        config=_config(s3_endpoint),
    )
    assert len(os.listdir(folder)) == 40
    originals = sorted(p.read_bytes() for p in phantom.ct_dir.iterdir())
    assert sorted(p.read_bytes() for p in Path(folder).iterdir()) == originals


def test_empty_listing_is_an_error(s3_client, s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="series 1.2.3: no files found at s3://idc-open-data/nothing-here/"):
        fetch_series(
            "s3://idc-open-data/nothing-here/*",
            str(tmp_path / "e"),
            series_uid="1.2.3",
            config=_config(s3_endpoint),
        )


def test_too_few_files_is_an_error(phantom, upload_series, s3_endpoint: str, tmp_path: Path) -> None:
    url = upload_series(phantom.ct_dir)
    with pytest.raises(FetchError, match="40 files found at .*, expected 41"):
        fetch_series(
            url,
            str(tmp_path / "few"),
            series_uid="1.2.3",
            expected_count=41,
            config=_config(s3_endpoint),
        )


def test_unreachable_endpoint_retries_then_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = FetchConfig(endpoint_url="http://127.0.0.1:9", attempts=3, backoff_s=0.01, s5cmd_retry_count=0)
    with pytest.raises(FetchError, match="after 3 attempts"):
        fetch_series("s3://idc-open-data/x/*", str(tmp_path / "u"), series_uid="1.2.3", config=config)
    assert sum("retrying" in r.message for r in caplog.records) == 2


def test_transient_failure_recovers(
    monkeypatch: pytest.MonkeyPatch, phantom, upload_series, s3_endpoint: str, tmp_path: Path
) -> None:
    """The first attempt fails as a dropped connection would; the retry runs the real s5cmd."""
    url = upload_series(phantom.ct_dir)
    flaky = tmp_path / "flaky-s5cmd"
    marker = tmp_path / "failed-once"
    flaky.write_text(
        "#!/bin/sh\n"
        f"if [ ! -e {marker} ]; then touch {marker}; echo 'connection reset by peer' >&2; exit 1; fi\n"
        f'exec {s5.s5cmd_binary()} "$@"\n'
    )
    flaky.chmod(0o755)
    monkeypatch.setattr(s5, "s5cmd_binary", lambda: str(flaky))
    folder = fetch_series(url, str(tmp_path / "t"), series_uid="1.2.3", config=_config(s3_endpoint))
    assert marker.exists()
    assert len(os.listdir(folder)) == 40


def test_local_folder_used_in_place(phantom, tmp_path: Path) -> None:
    assert fetch_series(str(phantom.ct_dir), str(tmp_path / "x"), series_uid="1.2.3") == str(phantom.ct_dir)
    assert not (tmp_path / "x").exists()


def test_local_folder_missing_or_short(phantom, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="does not exist"):
        fetch_series(str(tmp_path / "absent"), str(tmp_path / "x"), series_uid="1.2.3")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FetchError, match="no files found"):
        fetch_series(str(empty), str(tmp_path / "x"), series_uid="1.2.3")
    short = tmp_path / "short"
    shutil.copytree(phantom.ct_dir, short)
    next(short.iterdir()).unlink()
    with pytest.raises(FetchError, match="39 files found .* expected 40"):
        fetch_series(str(short), str(tmp_path / "x"), series_uid="1.2.3", expected_count=40)


def test_gs_urls_go_through_the_s3_api() -> None:
    assert s5.to_s3_url("gs://idc-open-data/abc/*") == "s3://idc-open-data/abc/*"

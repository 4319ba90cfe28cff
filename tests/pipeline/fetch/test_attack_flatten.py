"""Attacks on the one-wildcard ``cp --flatten`` fetch: keys added after the listing, retries,
what is left in the folder, symlinks in the folder."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pipeline.errors import FetchError
from pipeline.fetch import s5cmd as s5
from pipeline.fetch.s5cmd import FetchConfig, fetch_series
from tests.support.s3 import BUCKET


def _config(endpoint: str, **kw: object) -> FetchConfig:
    return FetchConfig(endpoint_url=endpoint, **{"attempts": 2, "backoff_s": 0.01, **kw})  # type: ignore[arg-type]


def _put(s3_client, key: str, body: bytes) -> None:  # type: ignore[no-untyped-def]
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=body, ACL="public-read")


def _after_listing(monkeypatch: pytest.MonkeyPatch, action) -> None:  # type: ignore[no-untyped-def]
    listed = s5._list

    def wrapped(fetch):  # type: ignore[no-untyped-def]
        objects = listed(fetch)
        action()
        return objects

    monkeypatch.setattr(s5, "_list", wrapped)


def _series(s3_client, n: int = 3) -> tuple[str, dict[str, bytes]]:  # type: ignore[no-untyped-def]
    series = str(uuid.uuid4())
    good = {f"{i:03d}-{uuid.uuid4().hex[:8]}.dcm": os.urandom(64 + i) for i in range(n)}
    for name, body in good.items():
        _put(s3_client, f"{series}/{name}", body)
    return series, good


def _contents(folder: str) -> dict[str, bytes]:
    return {n: Path(folder, n).read_bytes() for n in os.listdir(folder)}


def test_late_directory_like_key_and_hidden_and_dotdot_keys_are_removed(
    s3_client, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    series, good = _series(s3_client)
    tag = uuid.uuid4().hex[:8]

    def add() -> None:
        _put(s3_client, f"{series}/dirlike-{tag}/", b"")
        _put(s3_client, f"{series}/a/b/c/deep-{tag}.dcm", b"DEEP")
        _put(s3_client, f"{series}/.hidden-{tag}", b"HIDDEN")
        _put(s3_client, f"{series}/x/../dots-{tag}.dcm", b"DOTS")

    _after_listing(monkeypatch, add)
    folder = fetch_series(
        f"s3://{BUCKET}/{series}/*", str(tmp_path / "ct"), series_uid="1.2.3", config=_config(s3_endpoint)
    )
    assert _contents(folder) == good
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["ct"] + [
        f"ct/{n}" for n in sorted(good)
    ]


def test_many_late_keys_are_all_removed(
    s3_client, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    series, good = _series(s3_client, n=2)

    def add() -> None:
        for i in range(150):
            _put(s3_client, f"{series}/late-{i:04d}.dcm", b"L" * (i + 1))

    _after_listing(monkeypatch, add)
    folder = fetch_series(
        f"s3://{BUCKET}/{series}/*", str(tmp_path / "ct"), series_uid="1.2.3", config=_config(s3_endpoint)
    )
    assert _contents(folder) == good


def test_nested_late_key_with_a_listed_base_name_never_yields_its_content(
    s3_client, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prefix/sub/NAME added after the listing is left out of the copy (``--exclude '*/*'``), so
    it is not flattened onto prefix/NAME: the listed bytes are fetched, without a retry."""
    series, good = _series(s3_client, n=1)
    (name, body) = next(iter(good.items()))
    evil = bytes(b ^ 0xFF for b in body)  # same size, other content

    def add() -> None:
        for i in range(8):
            _put(s3_client, f"{series}/sub{i}/{name}", evil)

    _after_listing(monkeypatch, add)
    folder = fetch_series(
        f"s3://{BUCKET}/{series}/*",
        str(tmp_path / "ct"),
        series_uid="1.2.3",
        config=_config(s3_endpoint, attempts=1),
    )
    assert _contents(folder) == good


def test_retry_after_a_failed_verify_replaces_the_bad_copy(
    s3_client, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first copy is corrupted after s5cmd wrote it; the second attempt must rewrite it."""
    series, good = _series(s3_client, n=3)
    name = sorted(good)[1]
    copies = {"n": 0}
    real_copy = s5._copy

    def corrupting_copy(fetch):  # type: ignore[no-untyped-def]
        real_copy(fetch)
        copies["n"] += 1
        if copies["n"] == 1:
            path = Path(fetch.folder, name)
            data = bytearray(path.read_bytes())
            data[0] ^= 0xFF
            path.write_bytes(bytes(data))
            Path(fetch.folder, name + "123456").write_bytes(b"partial")  # a killed attempt's part

    monkeypatch.setattr(s5, "_copy", corrupting_copy)
    folder = fetch_series(
        f"s3://{BUCKET}/{series}/*", str(tmp_path / "ct"), series_uid="1.2.3", config=_config(s3_endpoint)
    )
    assert copies["n"] == 2
    assert _contents(folder) == good


def test_a_corruption_every_attempt_fails_after_all_attempts(
    s3_client, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    series, good = _series(s3_client, n=2)
    name = sorted(good)[0]
    real_copy = s5._copy

    def corrupting_copy(fetch):  # type: ignore[no-untyped-def]
        real_copy(fetch)
        Path(fetch.folder, name).write_bytes(b"X" * len(good[name]))

    monkeypatch.setattr(s5, "_copy", corrupting_copy)
    with pytest.raises(FetchError, match=r"after 3 attempts: .*does not match its ETag"):
        fetch_series(
            f"s3://{BUCKET}/{series}/*",
            str(tmp_path / "ct"),
            series_uid="1.2.3",
            config=_config(s3_endpoint, attempts=3),
        )


def test_leftovers_of_an_earlier_run_in_the_folder_are_removed(
    s3_client, s3_endpoint: str, tmp_path: Path
) -> None:
    series, good = _series(s3_client, n=2)
    dest = tmp_path / "ct"
    (dest / "olddir" / "inner").mkdir(parents=True)
    (dest / "olddir" / "inner" / "f.dcm").write_bytes(b"old")
    (dest / "stale.dcm").write_bytes(b"stale")
    (dest / ".stale-hidden").write_bytes(b"stale")
    folder = fetch_series(
        f"s3://{BUCKET}/{series}/*", str(dest), series_uid="1.2.3", config=_config(s3_endpoint)
    )
    assert _contents(folder) == good


def test_symlinks_in_the_folder_are_removed_not_followed(s3_client, s3_endpoint: str, tmp_path: Path) -> None:
    """An unlisted symlink to a directory outside is unlinked (the directory stays whole); a
    listed name that is a symlink to a file outside is replaced, and the outside file is kept."""
    series, good = _series(s3_client, n=2)
    listed = sorted(good)[0]
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    (outside_dir / "keep.txt").write_bytes(b"keep")
    outside_file = tmp_path / "victim.dcm"
    outside_file.write_bytes(b"victim")
    dest = tmp_path / "ct"
    dest.mkdir()
    (dest / "linkdir").symlink_to(outside_dir, target_is_directory=True)
    (dest / "dangling").symlink_to(tmp_path / "nowhere")
    (dest / listed).symlink_to(outside_file)
    folder = fetch_series(
        f"s3://{BUCKET}/{series}/*", str(dest), series_uid="1.2.3", config=_config(s3_endpoint)
    )
    assert sorted(os.listdir(folder)) == sorted(good)
    assert not Path(folder, listed).is_symlink()
    assert _contents(folder) == good
    assert (outside_dir / "keep.txt").read_bytes() == b"keep"
    assert outside_file.read_bytes() == b"victim"


def test_without_etag_checks_a_truncated_copy_is_still_refused(
    s3_client, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_etag=False still checks sizes: a truncated copy is retried, then refused."""
    series, good = _series(s3_client, n=1)
    name = next(iter(good))
    real_copy = s5._copy

    def truncating_copy(fetch):  # type: ignore[no-untyped-def]
        real_copy(fetch)
        Path(fetch.folder, name).write_bytes(good[name][:10])

    monkeypatch.setattr(s5, "_copy", truncating_copy)
    with pytest.raises(FetchError, match=f"{name} has 10 bytes, the listing says {len(good[name])}"):
        fetch_series(
            f"s3://{BUCKET}/{series}/*",
            str(tmp_path / "ct"),
            series_uid="1.2.3",
            config=_config(s3_endpoint, verify_etag=False),
        )


def test_nested_late_key_with_a_listed_base_name_and_size_is_not_taken_without_md5(
    s3_client, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an MD5 check (verify_etag=False, or a multipart ETag), a nested key added after the
    listing with a listed file's base name and size is not flattened onto that file: the copy
    leaves out keys below the series' folder (``--exclude '*/*'``)."""
    series, good = _series(s3_client, n=1)
    (name, body) = next(iter(good.items()))
    evil = bytes(b ^ 0xFF for b in body)

    def add() -> None:
        for i in range(20):
            _put(s3_client, f"{series}/sub{i:02d}/{name}", evil)

    _after_listing(monkeypatch, add)
    folder = fetch_series(
        f"s3://{BUCKET}/{series}/*",
        str(tmp_path / "ct"),
        series_uid="1.2.3",
        config=_config(s3_endpoint, verify_etag=False),
    )
    assert os.listdir(folder) == [name]
    assert Path(folder, name).read_bytes() == body

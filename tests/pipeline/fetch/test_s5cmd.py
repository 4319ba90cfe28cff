"""Fetching with the real s5cmd from a local moto S3 server, unsigned, and from servers that misbehave."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.errors import FetchError
from pipeline.fetch import s5cmd as s5
from pipeline.fetch.s5cmd import FetchConfig, check_config, fetch_series
from tests.support.faults import Blackhole, S3FaultProxy, processes_with, s5cmd_left, wait_until
from tests.support.s3 import BUCKET

REPO = Path(__file__).resolve().parents[3]


def _config(endpoint: str, **kw: object) -> FetchConfig:
    return FetchConfig(endpoint_url=endpoint, **{"attempts": 2, "backoff_s": 0.01, **kw})  # type: ignore[arg-type]


def _put(s3_client, key: str, body: bytes = b"DICM", bucket: str = BUCKET) -> None:  # type: ignore[no-untyped-def]
    s3_client.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read")


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---- what works ----


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


def test_runs_the_go_binary_not_the_python_wrapper() -> None:
    """The PyPI package's bin/s5cmd is a Python script; killing it would orphan the real s5cmd."""
    binary = s5.s5cmd_binary()
    with open(binary, "rb") as f:
        head = f.read(4)
    assert not head.startswith(b"#!")
    if sys.platform.startswith("linux"):
        assert head == b"\x7fELF"
    wrapper = Path(sys.executable).with_name("s5cmd")
    if wrapper.exists():
        assert wrapper.read_bytes().startswith(b"#!")  # why the wrapper is skipped
        assert binary != str(wrapper)


def test_empty_listing_is_an_error_and_not_retried(
    s3_client, s3_endpoint: str, tmp_path: Path, s5cmd_calls: Callable[[], list[str]]
) -> None:
    with pytest.raises(FetchError, match="series 1.2.3: no files found at s3://idc-open-data/nothing-here/"):
        fetch_series(
            "s3://idc-open-data/nothing-here/*",
            str(tmp_path / "e"),
            series_uid="1.2.3",
            config=_config(s3_endpoint, attempts=3),
        )
    assert len(s5cmd_calls()) == 1


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
    with pytest.raises(FetchError, match="after 3 attempts: .*connection refused"):
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


def test_local_single_file_used_in_place(phantom, tmp_path: Path) -> None:
    one = next(phantom.ct_dir.iterdir())
    assert fetch_series(str(one), str(tmp_path / "x"), series_uid="1.2.3") == str(one)


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


# ---- fetch that ends ----


def test_blackhole_ends_within_the_fetch_timeout(blackhole: Blackhole, tmp_path: Path) -> None:
    """A server that accepts and never answers: each attempt stops when nothing arrives, the whole
    fetch when its budget is spent; no s5cmd is left."""
    config = FetchConfig(
        endpoint_url=blackhole.url, timeout_s=3, stall_timeout_s=1, attempts=5, backoff_s=0.01
    )
    start = time.monotonic()
    with pytest.raises(
        FetchError,
        match=rf"series 1.2.3: fetch timed out after 3 s \([23] attempts\) from {blackhole.url}$",
    ):
        fetch_series("s3://idc-open-data/x/*", str(tmp_path / "b"), series_uid="1.2.3", config=config)
    assert time.monotonic() - start < 3.5
    assert blackhole.accepted >= 2
    assert s5cmd_left(blackhole.url) == []


def test_one_attempt_that_never_ends_is_stopped_at_the_timeout(blackhole: Blackhole, tmp_path: Path) -> None:
    config = FetchConfig(endpoint_url=blackhole.url, timeout_s=2, stall_timeout_s=60, attempts=3)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"fetch timed out after 2 s \(1 attempt\) from http://127.0.0.1:"):
        fetch_series("s3://idc-open-data/x/*", str(tmp_path / "b"), series_uid="1.2.3", config=config)
    assert time.monotonic() - start < 2.5
    assert s5cmd_left(blackhole.url) == []


def test_a_callers_deadline_ends_the_fetch_earlier(blackhole: Blackhole, tmp_path: Path) -> None:
    config = FetchConfig(endpoint_url=blackhole.url, timeout_s=600, stall_timeout_s=60)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"fetch timed out after 1.5 s \(1 attempt\)"):
        fetch_series(
            "s3://idc-open-data/x/*",
            str(tmp_path / "b"),
            series_uid="1.2.3",
            config=config,
            deadline=time.monotonic() + 1.5,
        )
    assert time.monotonic() - start < 2.0
    assert s5cmd_left(blackhole.url) == []


def test_stall_mid_object_ends_as_an_error(
    phantom, upload_series, fault_proxy: Callable[..., S3FaultProxy], tmp_path: Path
) -> None:
    """The listing passes; every object GET sends 1,000 bytes and then holds the connection."""
    url = upload_series(phantom.ct_dir)
    proxy = fault_proxy(fault="stall", after_bytes=1000)
    config = _config(proxy.url, timeout_s=8, stall_timeout_s=0.5, attempts=2)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"after 2 attempts: nothing arrived for 0.5 s \(stalled\)"):
        fetch_series(url, str(tmp_path / "s"), series_uid="1.2.3", config=config)
    assert time.monotonic() - start < 8
    assert proxy.object_gets >= 2
    assert s5cmd_left(proxy.url) == []


def test_stall_on_one_object_heals_on_the_next_attempt(
    phantom, upload_series, fault_proxy: Callable[..., S3FaultProxy], tmp_path: Path
) -> None:
    url = upload_series(phantom.ct_dir)
    proxy = fault_proxy(fault="stall", after_bytes=1000, times=1)
    config = _config(proxy.url, timeout_s=30, stall_timeout_s=1, attempts=2)
    folder = fetch_series(url, str(tmp_path / "s"), series_uid="1.2.3", expected_count=40, config=config)
    assert len(os.listdir(folder)) == 40  # s5cmd's partial download of the stalled object is gone
    originals = sorted(p.read_bytes() for p in phantom.ct_dir.iterdir())
    assert sorted(p.read_bytes() for p in Path(folder).iterdir()) == originals
    assert s5cmd_left(proxy.url) == []


_FETCHING_CHILD = textwrap.dedent(
    """
    import os, sys
    from tests.support.signals import kill_on_signals  # as lnq's handler does
    from pipeline.fetch.s5cmd import FetchConfig, fetch_series
    config = FetchConfig(endpoint_url=os.environ["LNQ_TEST_ENDPOINT"], timeout_s=60, stall_timeout_s=60)
    def fetch():
        fetch_series("s3://idc-open-data/x/*", sys.argv[2], series_uid="1.2.3", config=config)
    if sys.argv[1] == "handler":
        with kill_on_signals():
            fetch()
    else:
        fetch()
    """
)


@pytest.mark.parametrize(
    ("mode", "signal_number"),
    [
        ("handler", signal.SIGTERM),
        ("handler", signal.SIGINT),
        ("bare", signal.SIGTERM),
        ("bare", signal.SIGKILL),
    ],
)
def test_signal_to_a_fetching_process_leaves_no_s5cmd(
    blackhole: Blackhole, tmp_path: Path, mode: str, signal_number: signal.Signals
) -> None:
    """With the job's handlers, SIGINT/SIGTERM kill s5cmd's group; without them (or on SIGKILL,
    where no handler runs) the kernel kills s5cmd with its parent (PR_SET_PDEATHSIG)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LNQ_TEST_ENDPOINT": blackhole.url}
    child = subprocess.Popen(
        [sys.executable, "-c", _FETCHING_CHILD, mode, str(tmp_path / "dest")], cwd=REPO, env=env
    )
    try:
        assert wait_until(lambda: processes_with("bin/s5cmd", blackhole.url) != [], 20)
        child.send_signal(signal_number)
        child.wait(10)
        assert child.returncode != 0
        assert s5cmd_left(blackhole.url) == []
    finally:
        child.kill()
        child.wait()
        for pid in processes_with("bin/s5cmd", blackhole.url):
            os.kill(pid, signal.SIGKILL)


# ---- retries only for what can heal ----


def test_missing_bucket_404_is_not_retried(
    s3_endpoint: str, tmp_path: Path, s5cmd_calls: Callable[[], list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(s3_endpoint, attempts=3, extra_buckets=("lnq-absent-bucket",))
    with pytest.raises(FetchError, match="series 1.2.3: listing s3://lnq-absent-bucket/x/\\* from .* 404"):
        fetch_series("s3://lnq-absent-bucket/x/*", str(tmp_path / "m"), series_uid="1.2.3", config=config)
    assert len(s5cmd_calls()) == 1
    assert not any("retrying" in r.message for r in caplog.records)


def test_access_denied_403_is_not_retried(
    phantom,
    upload_series,
    fault_proxy: Callable[..., S3FaultProxy],
    tmp_path: Path,
    s5cmd_calls: Callable[[], list[str]],
) -> None:
    url = upload_series(phantom.ct_dir)
    proxy = fault_proxy(fault="status", status=403, s3_code="AccessDenied")
    config = _config(proxy.url, attempts=3)
    with pytest.raises(FetchError, match="copying s3://.* failed: .*AccessDenied"):
        fetch_series(url, str(tmp_path / "d"), series_uid="1.2.3", config=config)
    calls = s5cmd_calls()
    assert len(calls) == 2 and " ls " in calls[0] and " cp --flatten " in calls[1]  # one listing, one copy
    assert proxy.object_gets == 40  # one GET per object, none again


def test_throttling_503_is_retried_and_heals(
    phantom,
    upload_series,
    fault_proxy: Callable[..., S3FaultProxy],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = upload_series(phantom.ct_dir)
    proxy = fault_proxy(fault="status", status=503, s3_code="SlowDown", times=40)
    config = _config(proxy.url, attempts=2, s5cmd_retry_count=0)
    folder = fetch_series(url, str(tmp_path / "t"), series_uid="1.2.3", expected_count=40, config=config)
    assert len(os.listdir(folder)) == 40
    assert sum("retrying" in r.message for r in caplog.records) == 1
    assert proxy.object_gets == 80


def test_a_flipped_byte_is_caught_by_the_etag(
    phantom, upload_series, fault_proxy: Callable[..., S3FaultProxy], tmp_path: Path
) -> None:
    """Plain http on loopback has no integrity of its own: the MD5 ETag check catches the flip."""
    url = upload_series(phantom.ct_dir)
    always = fault_proxy(fault="flip", after_bytes=500)
    with pytest.raises(FetchError, match=r"after 2 attempts: .*\.dcm does not match its ETag \(MD5 "):
        fetch_series(url, str(tmp_path / "f"), series_uid="1.2.3", config=_config(always.url))
    once = fault_proxy(fault="flip", after_bytes=500, times=1)
    folder = fetch_series(url, str(tmp_path / "g"), series_uid="1.2.3", config=_config(once.url))
    originals = sorted(p.read_bytes() for p in phantom.ct_dir.iterdir())
    assert sorted(p.read_bytes() for p in Path(folder).iterdir()) == originals


def test_the_md5_check_names_the_first_bad_file_in_listing_order_whatever_thread_hashed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    names = [f"{i:02d}.dcm" for i in range(12)]
    objects = []
    for i, name in enumerate(names):
        data = os.urandom(3000 + i)
        (tmp_path / name).write_bytes(data)
        objects.append(s5._Object(name=name, size=len(data), etag=hashlib.md5(data).hexdigest()))
    fetch = s5._Fetch("s3://b/p/*", None, str(tmp_path), "1.2.3", FetchConfig(), end=0.0, budget_s=0.0)  # type: ignore[arg-type]
    seen: list[str] = []
    hash_one = s5._md5
    monkeypatch.setattr(s5, "_md5", lambda path: seen.append(path) or hash_one(path))
    s5._verify(fetch, objects)
    assert sorted(seen) == sorted(str(tmp_path / n) for n in names)  # every file hashed once
    for bad in (9, 5):  # corrupt two, the later one first: the message names 05.dcm
        path = tmp_path / names[bad]
        path.write_bytes(bytes([path.read_bytes()[0] ^ 1]) + path.read_bytes()[1:])
    for _ in range(5):
        with pytest.raises(s5._Transient, match=r"^05\.dcm does not match its ETag"):
            s5._verify(fetch, objects)
    import concurrent.futures

    class NoThreads(concurrent.futures.ThreadPoolExecutor):
        def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(s5, "ThreadPoolExecutor", NoThreads)
    with pytest.raises(s5._Transient, match=r"^05\.dcm does not match its ETag"):
        s5._verify(fetch, objects)  # hashed in this thread when none can start
    objects[3] = s5._Object(name=names[3], size=1, etag=objects[3].etag)
    with pytest.raises(s5._Transient, match=r"^03\.dcm has \d+ bytes, the listing says 1"):
        s5._verify(fetch, objects)  # sizes are checked before anything is hashed


# ---- fetch that stays inside ----


@pytest.mark.parametrize(
    "bad_part",
    ["../../evil-{tag}.dcm", "../evil-{tag}.dcm", "/evil-{tag}.dcm", "sub/evil-{tag}.dcm", ".evil-{tag}"],
)
def test_unsafe_keys_are_refused_and_nothing_is_written(
    s3_client, s3_endpoint: str, tmp_path: Path, bad_part: str
) -> None:
    tag = uuid.uuid4().hex
    series = str(uuid.uuid4())
    _put(s3_client, f"{series}/{uuid.uuid4()}.dcm")
    evil_key = f"{series}/{bad_part.format(tag=tag)}"
    _put(s3_client, evil_key, b"EVIL")
    stored = [o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=series)["Contents"]]
    assert evil_key in stored  # moto keeps the key as given, '..' and all, as S3 does
    dest = tmp_path / "work" / "series" / "ct"
    with pytest.raises(FetchError, match=r"series 1.2.3: refused to fetch .*not plain file names.*evil-"):
        fetch_series(f"s3://{BUCKET}/{series}/*", str(dest), series_uid="1.2.3", config=_config(s3_endpoint))
    assert _files_under(tmp_path) == []  # not even the safe object: the series is refused whole
    for where in (tmp_path, tmp_path / "work", REPO, Path.cwd(), Path("/")):
        assert not (where / f"evil-{tag}.dcm").exists()


def test_unsafe_keys_that_appear_after_the_listing_stay_inside_and_are_removed(
    s3_client, s3_endpoint: str, tmp_path: Path, monkeypatch
) -> None:
    """Keys written between the listing and the copy are copied by their last part only
    (``--flatten``), so none lands outside the folder, and the files the listing did not name
    are removed: the series is what was listed."""
    from pipeline.fetch import s5cmd as s5

    tag = uuid.uuid4().hex
    series = str(uuid.uuid4())
    good = [f"{uuid.uuid4()}.dcm" for _ in range(3)]
    for name in good:
        _put(s3_client, f"{series}/{name}", name.encode())

    def then_add_evil(objects):  # type: ignore[no-untyped-def]
        for bad in ("../../evil-{tag}.dcm", "../evil-{tag}.dcm", "sub/deep-{tag}.dcm", ".late-{tag}"):
            _put(s3_client, f"{series}/{bad.format(tag=tag)}", b"EVIL")
        return objects

    listed = s5._list
    monkeypatch.setattr(s5, "_list", lambda fetch: then_add_evil(listed(fetch)))
    dest = tmp_path / "work" / "series" / "ct"
    folder = fetch_series(
        f"s3://{BUCKET}/{series}/*", str(dest), series_uid="1.2.3", config=_config(s3_endpoint)
    )
    assert sorted(os.listdir(folder)) == sorted(good)
    assert _files_under(tmp_path) == sorted(f"work/series/ct/{name}" for name in good)
    for where in (tmp_path, tmp_path / "work", tmp_path / "work" / "series", REPO, Path.cwd(), Path("/")):
        assert not (where / f"evil-{tag}.dcm").exists()


@pytest.mark.parametrize(
    "url",
    [
        "s3://idc-open-data/*",
        "s3://idc-open-data/../x/*",
        "s3://idc-open-data//x/*",
        "s3://idc-open-data/a b/*",
    ],
)
def test_unsafe_series_urls_are_refused_before_s5cmd_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    monkeypatch.setattr(s5, "s5cmd_binary", lambda: pytest.fail("s5cmd must not run"))
    with pytest.raises(FetchError, match="series 1.2.3: .*(no series folder|unsafe path part)"):
        fetch_series(url, str(tmp_path / "u"), series_uid="1.2.3", config=_config("https://s3.amazonaws.com"))


def test_bucket_outside_the_allow_list_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(s5, "s5cmd_binary", lambda: pytest.fail("s5cmd must not run"))
    with pytest.raises(
        FetchError,
        match=r"series 1.2.3: bucket 'someone-elses-bucket' is not one of IDC's public buckets "
        r"\(idc-open-data, idc-open-data-two, idc-open-data-cr\); allow someone-elses-bucket explicitly",
    ):
        fetch_series("s3://someone-elses-bucket/x/*", str(tmp_path / "o"), series_uid="1.2.3")
    assert not (tmp_path / "o").exists()


def test_allowed_extra_bucket_is_fetched(s3_client, s3_endpoint: str, tmp_path: Path) -> None:
    bucket = "lnq-extra-bucket"
    s3_client.create_bucket(Bucket=bucket, ACL="public-read")
    series = str(uuid.uuid4())
    _put(s3_client, f"{series}/a.dcm", b"A" * 10, bucket=bucket)
    _put(s3_client, f"{series}/b.dcm", b"B" * 20, bucket=bucket)
    config = _config(s3_endpoint, extra_buckets=(bucket,))
    folder = fetch_series(f"s3://{bucket}/{series}/*", str(tmp_path / "x"), series_uid="1.2.3", config=config)
    assert {p.name: p.stat().st_size for p in Path(folder).iterdir()} == {"a.dcm": 10, "b.dcm": 20}


@pytest.mark.parametrize(
    "endpoint",
    ["http://example.org", "http://s3.amazonaws.com", "http://10.0.0.1:9000", "http://127.0.0.1.example.org"],
)
def test_plain_http_is_refused_off_loopback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, endpoint: str
) -> None:
    monkeypatch.setattr(s5, "s5cmd_binary", lambda: pytest.fail("s5cmd must not run"))
    with pytest.raises(FetchError, match="series 1.2.3: plain http endpoint .* refused: .*integrity"):
        fetch_series(
            "s3://idc-open-data/x/*", str(tmp_path / "h"), series_uid="1.2.3", config=_config(endpoint)
        )
    with pytest.raises(FetchError, match="accepted only on loopback"):
        check_config(_config(endpoint))


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:9000",
        "http://127.8.9.10",
        "http://localhost:9000",
        "http://[::1]:9000",
        "https://example.org",
    ],
)
def test_https_and_loopback_http_are_accepted(endpoint: str) -> None:
    check_config(_config(endpoint))


def test_other_schemes_and_bad_allowed_names_are_refused() -> None:
    with pytest.raises(FetchError, match="is not an https:// URL"):
        check_config(_config("ftp://127.0.0.1"))
    with pytest.raises(FetchError, match="allowed bucket 'Bad_Bucket' is not a valid bucket name"):
        check_config(_config("https://s3.amazonaws.com", extra_buckets=("Bad_Bucket",)))


def test_s5cmd_that_cannot_start_is_a_fetch_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(s5, "s5cmd_binary", lambda: str(tmp_path / "no-such-s5cmd"))
    with pytest.raises(FetchError, match="series 1.2.3: could not start s5cmd"):
        fetch_series(
            "s3://idc-open-data/x/*",
            str(tmp_path / "n"),
            series_uid="1.2.3",
            config=_config("http://127.0.0.1:9"),
        )


def test_memory_limit_too_small_for_s5cmd_is_a_fetch_error(s3_endpoint: str, tmp_path: Path) -> None:
    """The Go runtime reserves about 0.6 GB of address space: a smaller limit is an error, not a crash."""
    config = _config(s3_endpoint, memory_bytes=256 * 2**20)
    with pytest.raises(FetchError, match="series 1.2.3: listing .* failed: fatal error"):
        fetch_series("s3://idc-open-data/x/*", str(tmp_path / "m"), series_uid="1.2.3", config=config)

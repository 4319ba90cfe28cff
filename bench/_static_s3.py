"""A read-only S3 endpoint over a folder, for benchmarks that must not measure their S3 stand-in.

moto, the tests' S3 server, spends about 0.28 CPU seconds serving one 108-file series; on a 2-core
machine that CPU is taken from the job being measured, which IDC's buckets, being elsewhere, never
take. This serves ``ROOT/<bucket>/<key>`` files path-style with what s5cmd reads: ListObjectsV2
(prefix, delimiter, max-keys, continuation token, start-after), GetObject (with a byte range) and
HeadObject, ETags being the files' MD5 as S3 gives them for single-part objects. Nothing can be
written through it; a key never resolves outside ``ROOT``.

    python bench/_static_s3.py ROOT PORT
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import sys
import uuid
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def place_series(root: Path, bucket: str, path: Path) -> str:
    """Copy a folder (or one file) into ``root`` as IDC lays a series out,
    ``<bucket>/<uuid>/<uuid>.dcm``; return its ``s3://`` wildcard URL."""
    series_uuid = str(uuid.uuid4())
    folder = root / bucket / series_uuid
    folder.mkdir(parents=True)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for f in files:
        shutil.copyfile(f, folder / f"{uuid.uuid4()}.dcm")
    return f"s3://{bucket}/{series_uuid}/*"


class _Objects:
    """The files under a bucket folder, by key, with their MD5 computed once."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self._etags: dict[tuple[str, int, int], str] = {}

    def _inside(self, bucket: str, key: str) -> tuple[Path, Path] | None:
        """The bucket's folder and what ``key`` names in it, or None for anything outside it."""
        if not bucket or "/" in bucket or bucket in (".", ".."):
            return None
        base = (self.root / bucket).resolve()
        target = (base / key).resolve()
        return (base, target) if target == base or base in target.parents else None

    def path(self, bucket: str, key: str) -> Path | None:
        """The file ``key`` names, or None (absent, a folder, or outside the bucket)."""
        found = self._inside(bucket, key)
        return found[1] if found and found[1] != found[0] and found[1].is_file() else None

    def keys(self, bucket: str, prefix: str) -> list[tuple[str, Path]]:
        """``(key, file)`` under ``prefix``, in key order; only the prefix's own folder is walked."""
        found_in = self._inside(bucket, prefix.rpartition("/")[0])
        if found_in is None or not found_in[1].is_dir():
            return []
        base, start = found_in
        found = []
        for folder, _, files in os.walk(start):
            for name in files:
                path = Path(folder, name)
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix):
                    found.append((key, path))
        return sorted(found)

    def etag(self, path: Path) -> str:
        stat = path.stat()
        cache_key = (str(path), stat.st_size, stat.st_mtime_ns)
        if cache_key not in self._etags:
            self._etags[cache_key] = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        return self._etags[cache_key]


Reply = tuple[int, dict[str, str], bytes]


def respond(objects: _Objects, method: str, target: str, headers: dict[str, str]) -> Reply:
    """Status, headers and body for one request (``headers`` with lower-case names)."""
    if method not in ("GET", "HEAD"):
        return _error(405, "MethodNotAllowed")
    url = urlsplit(target)
    bucket, _, key = unquote(url.path).lstrip("/").partition("/")
    if not key:
        if bucket and (objects.root / bucket).is_dir():
            return _list(objects, bucket, parse_qs(url.query, keep_blank_values=True))
        return _error(404, "NoSuchBucket")
    path = objects.path(bucket, key)
    if path is None:
        return _error(404, "NoSuchKey")
    stat = path.stat()
    size = stat.st_size
    reply = {
        "ETag": f'"{objects.etag(path)}"',
        "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
    }
    status, first, last = 200, 0, size - 1
    wanted = RANGE.match(headers.get("range", ""))
    if wanted and size:
        lo, hi = wanted.groups()
        if lo:
            first, last = int(lo), min(int(hi), size - 1) if hi else size - 1
        else:
            first = max(0, size - int(hi or 0))
        if first > last:
            return _error(416, "InvalidRange")
        status = 206
        reply["Content-Range"] = f"bytes {first}-{last}/{size}"
    if method == "HEAD":
        reply["Content-Length"] = str(last - first + 1)
        return status, reply, b""
    with open(path, "rb") as f:
        f.seek(first)
        return status, reply, f.read(last - first + 1)


def _list(objects: _Objects, bucket: str, query: dict[str, list[str]]) -> Reply:
    """ListObjectsV2 (path style): keys in order, grouped at ``delimiter``, ``max-keys`` a page."""
    prefix = query.get("prefix", [""])[0]
    delimiter = query.get("delimiter", [""])[0]
    max_keys = max(0, min(1000, int(query.get("max-keys", ["1000"])[0] or 1000)))
    after = query.get("continuation-token", query.get("start-after", [""]))[0]
    contents: list[str] = []
    prefixes: list[str] = []
    truncated, last = False, ""
    for key, path in objects.keys(bucket, prefix):
        if key <= after:
            continue
        rest = key[len(prefix) :]
        if delimiter and delimiter in rest:
            common = prefix + rest.split(delimiter, 1)[0] + delimiter
            if (prefixes and prefixes[-1] == common) or common <= after:
                continue
            entry, marker = common, common
        else:
            stat = path.stat()
            modified = datetime.fromtimestamp(stat.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            entry = (
                f"<Contents><Key>{escape(key)}</Key><LastModified>{modified}</LastModified>"
                f'<ETag>"{objects.etag(path)}"</ETag><Size>{stat.st_size}</Size>'
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
            marker = key
        if len(contents) + len(prefixes) == max_keys:
            truncated = True
            break
        (contents if marker == key else prefixes).append(entry)
        last = marker
    token = f"<NextContinuationToken>{escape(last)}</NextContinuationToken>" if truncated else ""
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{NS}">'
        f"<Name>{escape(bucket)}</Name>"
        f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents) + len(prefixes)}</KeyCount>"
        f"<MaxKeys>{max_keys}</MaxKeys><Delimiter>{escape(delimiter)}</Delimiter>"
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{token}"
        + "".join(contents)
        + "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes)
        + "</ListBucketResult>"
    )
    return 200, {"Content-Type": "application/xml"}, xml.encode()


def _error(status: int, code: str) -> Reply:
    xml = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code></Error>'
    return status, {"Content-Type": "application/xml"}, xml.encode()


async def _connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, objects: _Objects) -> None:
    """HTTP/1.1 with keep-alive, one request after another (what s5cmd's connections do)."""
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            if int(headers.get("content-length", "0") or 0):
                await reader.readexactly(int(headers["content-length"]))
            status, reply, body = respond(objects, method, target, headers)
            reply.setdefault("Content-Length", str(len(body)))
            if method == "HEAD":  # the headers of a GET, no body
                body = b""
            lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
            lines += [f"{name}: {value}" for name, value in reply.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def serve(root: Path, port: int) -> None:
    """Serve ``root`` on loopback ``port`` until killed (one thread: asyncio, no thread per connection)."""
    objects = _Objects(root)

    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _connection(r, w, objects), "127.0.0.1", port, limit=1 << 16
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))

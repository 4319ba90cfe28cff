"""Loopback servers that misbehave, for fetch tests, and a look at what processes are left.

- :class:`Blackhole`: accepts TCP connections and never answers (a firewall that drops, a dead
  load balancer).
- :class:`S3FaultProxy`: an HTTP proxy in front of the moto S3 server that passes everything
  through except object GETs, which it can stall mid-body (send the headers and ``after_bytes``
  of the body, then hold the connection), corrupt (flip one byte), or answer with an S3 error
  status (403, 503...).

Each runs in daemon threads of the test process, stops by itself after ``lifetime_s`` and is
a context manager; tests start and stop them through fixtures.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

DEFAULT_LIFETIME_S = 120.0

Fault = Literal["stall", "flip", "status"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


class _Lifetime:
    """A stop event that also fires by itself after ``lifetime_s``."""

    def __init__(self, lifetime_s: float) -> None:
        self.stopped = threading.Event()
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        self.stopped.set()
        self._timer.cancel()


class Blackhole:
    """Listens on loopback and accepts connections, then says nothing, until it stops."""

    def __init__(self, *, lifetime_s: float = DEFAULT_LIFETIME_S) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._life = _Lifetime(lifetime_s)
        self._thread = threading.Thread(target=self._serve, name="blackhole", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._life.stopped.is_set():
                ready, _, _ = select.select([self._listener], [], [], 0.1)
                if ready:
                    with contextlib.suppress(OSError):
                        conn, _ = self._listener.accept()
                        self._held.append(conn)  # never read, never answered
                        self.accepted += 1
        finally:
            for conn in self._held:
                conn.close()
            self._listener.close()

    def stop(self) -> None:
        self._life.stop()
        self._thread.join(5)

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class S3FaultProxy:
    """Forwards HTTP to ``upstream``; object GETs get ``fault`` (the first ``times`` of them, or all).

    ``object_gets`` counts the object GETs seen, so a test can tell how often a fetch tried.
    """

    def __init__(
        self,
        upstream: str,
        *,
        fault: Fault,
        after_bytes: int = 1000,
        status: int = 503,
        s3_code: str = "SlowDown",
        times: int | None = None,
        lifetime_s: float = DEFAULT_LIFETIME_S,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.fault = fault
        self.after_bytes = after_bytes
        self.status = status
        self.s3_code = s3_code
        self.times = times
        self.object_gets = 0
        self._lock = threading.Lock()
        self._life = _Lifetime(lifetime_s)
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()
        self._watch = threading.Thread(target=self._stop_when_told, daemon=True)
        self._watch.start()

    def _stop_when_told(self) -> None:
        self._life.stopped.wait()
        self._server.shutdown()
        self._server.server_close()

    def take_fault(self) -> bool:
        """Count one object GET; True if it gets the fault."""
        with self._lock:
            self.object_gets += 1
            return self.times is None or self.object_gets <= self.times

    def hold(self) -> None:
        """Hold a stalled connection until the proxy stops."""
        self._life.stopped.wait()

    def stop(self) -> None:
        self._life.stop()
        self._thread.join(5)
        self._watch.join(5)

    def __enter__(self) -> S3FaultProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-response (s5cmd being killed) are expected here, not errors."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _is_object_get(method: str, path: str) -> bool:
    """``GET /bucket/key`` (path style, no query): an object body, not a listing."""
    parts = urlsplit(path)
    return method == "GET" and not parts.query and parts.path.strip("/").count("/") >= 1


def _handler_for(proxy: S3FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            faulty = _is_object_get(self.command, self.path) and proxy.take_fault()
            if faulty and proxy.fault == "status":
                self._send_error_status()
                return
            upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                length_header = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length_header or str(len(payload)))
                self.end_headers()
            finally:
                upstream.close()
            if self.command == "HEAD":
                return
            if faulty and proxy.fault == "stall" and response.status < 300:
                self.wfile.write(payload[: proxy.after_bytes])
                self.wfile.flush()
                proxy.hold()
                self.close_connection = True
                return
            if faulty and proxy.fault == "flip" and payload and response.status < 300:
                at = min(proxy.after_bytes, len(payload) - 1)
                payload = payload[:at] + bytes([payload[at] ^ 0xFF]) + payload[at + 1 :]
            self.wfile.write(payload)

        def _send_error_status(self) -> None:
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{proxy.s3_code}</Code>'
                f"<Message>fault injected by the test proxy</Message></Error>"
            ).encode()
            self.send_response(proxy.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    return Handler


# ---- processes left behind ----


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a running process (a zombie waiting to be reaped counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_with(*needles: str) -> list[int]:
    """Live processes (not this one) whose command line contains every one of ``needles``: pass a
    needle only this test's processes carry (its own endpoint's URL), never a program's name alone,
    which any other run on the machine may carry too (see :func:`under_subreaper`)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmdline for n in needles) and pid_alive(int(entry)):
            found.append(int(entry))
    return found


SUBREAPER = Path(__file__).with_name("subreaper.py")


def under_subreaper(command: list[str], leftovers: Path, *, grace_s: float = 2.0) -> list[str]:
    """``command`` run below a subreaper (``tests/support/subreaper.py``) that, once it has exited
    and ``grace_s`` has passed, writes to ``leftovers`` the processes of its own tree still running:
    a check of the run's processes that no other process on the machine can disturb."""
    return [sys.executable, str(SUBREAPER), str(leftovers), str(grace_s), *command]


def read_leftovers(path: Path) -> list[dict[str, object]]:
    """What :func:`under_subreaper` found still running of the run's process tree (pid, cmdline)."""
    return json.loads(path.read_text(encoding="utf-8"))


def wait_until(condition: Callable[[], bool], timeout_s: float, *, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def s5cmd_left(endpoint: str, *, wait_s: float = 5.0) -> list[int]:
    """s5cmd processes still talking to ``endpoint`` after waiting up to ``wait_s`` for them to go."""
    wait_until(lambda: not processes_with("bin/s5cmd", endpoint), wait_s)
    return processes_with("bin/s5cmd", endpoint)

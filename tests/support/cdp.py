"""Headless Debian chromium driven through the DevTools protocol (pip ``websocket-client``).

WebGL runs on SwiftShader (``--use-angle=swiftshader --enable-unsafe-swiftshader``), which is
what OHIF's Cornerstone3D viewports need on a machine without a GPU. Chromium's background
services are switched off: this machine has no network, and the browser must only talk to the
loopback server under test. Console messages and uncaught exceptions are collected so a test
can require that there were none.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INSTALL_HINT = "make viewer-tools (Debian package chromium, pip websocket-client)"
FLAGS = (
    "--headless=new",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-sandbox",  # tests may run as root
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> list[str]:
    gone = [] if chromium_path() else [f"chromium ({INSTALL_HINT})"]
    try:
        import websocket  # noqa: F401
    except ImportError:
        gone.append(f"python package websocket-client ({INSTALL_HINT})")
    return gone


@dataclass
class ConsoleEntry:
    level: str
    text: str
    source: str


@dataclass
class Browser:
    """One chromium with one page; :meth:`call` sends a DevTools command and waits for its answer."""

    process: subprocess.Popen[bytes]
    socket: Any
    profile: Path
    console: list[ConsoleEntry] = field(default_factory=list)
    _next_id: int = 0

    @classmethod
    def launch(
        cls, profile: Path, *, width: int = 1600, height: int = 1000, timeout_s: float = 30.0
    ) -> Browser:
        """Start chromium with a fresh ``profile`` folder and attach to its one page."""
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's, stale
        chromium = chromium_path()
        if chromium is None:
            raise RuntimeError(f"chromium is not installed: {INSTALL_HINT}")
        process = subprocess.Popen(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(profile / "chromium.log").open("wb"),
            start_new_session=True,
        )
        try:
            browser = cls._connect(process, profile, timeout_s)
            # exactly this page size, whatever the window manager of a headless browser makes of it
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            return browser
        except BaseException:
            _end_group(process)
            raise

    @classmethod
    def _connect(cls, process: subprocess.Popen[bytes], profile: Path, timeout_s: float) -> Browser:
        import websocket

        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                log = (profile / "chromium.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"chromium did not open its DevTools port within {timeout_s} s:\n{log}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            pages = [t for t in json.loads(answer.read()) if t.get("type") == "page"]
        sock = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=timeout_s, suppress_origin=True
        )
        browser = cls(process, sock, profile)
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable")
        return browser

    def call(self, method: str, timeout_s: float = 60.0, **params: Any) -> dict:
        """Send ``method`` and return its result, collecting the events that arrive meanwhile."""
        self._next_id += 1
        wanted = self._next_id
        self.socket.send(json.dumps({"id": wanted, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            message = json.loads(self.socket.recv())
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} had no answer within {timeout_s} s")

    def _event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            self.console.append(ConsoleEntry(params.get("type", ""), text, "console"))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console.append(ConsoleEntry("error", text, "exception"))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            where = entry.get("url", "")
            self.console.append(
                ConsoleEntry(entry.get("level", ""), f"{entry.get('text', '')} {where}", "log")
            )

    def evaluate(self, expression: str, *, timeout_s: float = 60.0) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON."""
        result = self.call(
            "Runtime.evaluate",
            timeout_s=timeout_s,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(
                f"{expression[:200]}: {details.get('exception', {}).get('description', details)}"
            )
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, what: str, timeout_s: float = 30.0, every_s: float = 0.25) -> Any:
        """Poll ``expression`` until it is truthy; its value. Raises TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout_s
        value: Any = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as exc:  # the page is between documents, or not there yet
                value = f"error: {exc}"[:300]
            else:
                if value:
                    return value
            self.idle(every_s)
        raise TimeoutError(f"{what}: not seen within {timeout_s} s (last value {value!r})")

    def idle(self, seconds: float) -> None:
        """Let the page run for ``seconds`` while its events are collected."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.socket.settimeout(left)
            try:
                self._event(json.loads(self.socket.recv()))
            except Exception as exc:  # websocket's timeout
                if type(exc).__name__ != "WebSocketTimeoutException":
                    raise
                return

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def click(self, x: float, y: float, *, count: int = 1) -> None:
        """A real left click (``count`` 2: a double click) at page coordinates."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for n in range(1, count + 1):
            for kind in ("mousePressed", "mouseReleased"):
                self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=n)

    def click_selector(self, selector: str, *, count: int = 1, what: str = "") -> None:
        """Click the centre of the first element matching ``selector`` (waits for it)."""
        box = self.wait_for(
            f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
                if (!e) return null; e.scrollIntoView({{block: 'center'}});
                const r = e.getBoundingClientRect();
                return r.width > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()""",
            what=what or selector,
        )
        self.click(box[0], box[1], count=count)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[ConsoleEntry]:
        return [e for e in self.console if e.level == "error"]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout_s=10)
        except Exception:  # already gone: the process is ended below either way
            pass
        try:
            self.socket.close()
        finally:
            _end_group(self.process)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """End chromium, then whatever is left of the process group it leads (renderers, GPU)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remote_text(arg: dict) -> str:
    if "value" in arg:
        return str(arg["value"])
    return str(arg.get("description") or arg.get("unserializableValue") or arg.get("type", ""))

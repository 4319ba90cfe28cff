"""OHIF v3's prebuilt viewer (npm ``@ohif/app`` ``dist/``) and Orthanc's DICOMweb behind one origin.

A small threaded HTTP server on loopback serves the viewer's files, answers ``/app-config.js``
with a configuration whose one ``dicomweb`` data source is this same origin, and forwards
``/dicom-web/...`` to Orthanc. One origin means no CORS for the browser to negotiate.
"""

from __future__ import annotations

import http.client
import mimetypes
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OHIF_VERSION = "3.13.2"
"""The ``@ohif/app`` release checked: keep in step with the Makefile's ``OHIF_VERSION``."""
OHIF_DIST = REPO / ".tools" / f"ohif-app-{OHIF_VERSION}" / "dist"
INSTALL_HINT = f"make viewer-tools (npm pack @ohif/app@{OHIF_VERSION}, unpacked into .tools/)"

APP_CONFIG = """\
/* Written by tests/support/ohif.py: one DICOMweb source, Orthanc behind this same origin. */
const origin = window.location.origin;
// the onboarding tour would cover the viewport in every screenshot: mark it as seen
localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
window.config = {
  name: 'lnq-viewer-test',
  routerBasename: null,
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Local Orthanc',
        name: 'orthanc',
        wadoUriRoot: origin + '/dicom-web',
        qidoRoot: origin + '/dicom-web',
        wadoRoot: origin + '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        dicomUploadEnabled: false,
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
"""

_TYPES = {".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}
_FORWARDED = ("Accept", "Content-Type", "Range")


def missing() -> list[str]:
    return [] if (OHIF_DIST / "index.html").is_file() else [f"{OHIF_DIST} ({INSTALL_HINT})"]


@dataclass
class ViewerServer:
    """The running server: ``url`` is the viewer's origin; ``requests`` every path asked for."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    url: str
    requests: list[tuple[str, int]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def serve_viewer(orthanc_url: str, *, dist: Path = OHIF_DIST) -> ViewerServer:
    """Serve ``dist`` and proxy ``/dicom-web/`` to ``orthanc_url``, on a free loopback port."""
    target = urllib.parse.urlsplit(orthanc_url)
    root = dist.resolve()
    requests: list[tuple[str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
            pass

        def do_GET(self) -> None:  # noqa: N802 - the base's name
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith("/dicom-web/"):
                self._forward()
            elif path == "/app-config.js":
                self._send(200, APP_CONFIG.encode(), "text/javascript")
            else:
                self._static(path)

        def do_POST(self) -> None:  # noqa: N802 - the base's name
            self._forward()

        def _static(self, path: str) -> None:
            file = (root / urllib.parse.unquote(path).lstrip("/")).resolve()
            if not file.is_relative_to(root):
                self._send(403, b"", "text/plain")
                return
            if not file.is_file():
                if Path(path).suffix:  # a missing asset
                    self._send(404, b"", "text/plain")
                    return
                file = root / "index.html"  # a route of the single-page app
            kind = _TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            self._send(200, file.read_bytes(), kind)

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {name: self.headers[name] for name in _FORWARDED if self.headers.get(name)}
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                kind = answer.getheader("Content-Type") or "application/octet-stream"
                self._send(answer.status, data, kind)
            finally:
                connection.close()

        def _send(self, status: int, data: bytes, kind: str) -> None:
            requests.append((self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ohif-server", daemon=True)
    thread.start()
    return ViewerServer(server, thread, f"http://127.0.0.1:{server.server_address[1]}", requests)

"""A throwaway Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) serving DICOMweb on loopback.

Its database and storage live in a folder the caller owns (a pytest ``tmp_path``); the DICOM
server (C-STORE port) is off and only local clients are accepted.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.s3 import free_port

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL_HINT = "make viewer-tools (Debian packages orthanc and orthanc-dicomweb)"


@dataclass
class Orthanc:
    """A running Orthanc: ``url`` is its REST root, ``url + '/dicom-web'`` its DICOMweb root."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def upload(self, path: Path) -> dict:
        """Store one DICOM file (``POST /instances``); Orthanc's answer (ID, ParentStudy, Status)."""
        request = urllib.request.Request(
            f"{self.url}/instances",
            data=path.read_bytes(),
            headers={"Content-Type": "application/dicom"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            stored = json.loads(answer.read())
        if stored.get("Status") not in ("Success", "AlreadyStored"):
            raise RuntimeError(f"Orthanc did not store {path}: {stored}")
        return stored

    def get_json(self, path: str) -> object:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def missing() -> list[str]:
    """What is not installed, as 'path (hint)' lines; empty when Orthanc can start."""
    return [f"{p} ({INSTALL_HINT})" for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]


def start_orthanc(folder: Path, *, timeout_s: float = 30.0) -> Orthanc:
    """Start Orthanc with DICOMweb at ``/dicom-web/`` on a free port, storing into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "lnq-viewer-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "SaveJobs": False,
        "HttpCompressionEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "StudiesMetadata": "Full"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = folder / "orthanc.log"
    process = subprocess.Popen(
        [str(ORTHANC), "--no-jobs", f"--logfile={log}", str(folder / "orthanc.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    orthanc = Orthanc(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{orthanc.url}/dicom-web/studies", timeout=1) as answer:
                if answer.status in (200, 204):
                    return orthanc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    orthanc.stop()
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"Orthanc did not serve DICOMweb on port {port} within {timeout_s} s:\n{tail}")

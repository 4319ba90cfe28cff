"""A local Cloud Storage emulator (gcp-storage-emulator) for gs:// paths in tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.s3 import free_port, start_server


def start_gcs_emulator(bucket: str, timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start the emulator in memory with ``bucket``; return the process and its URL."""
    port = free_port()
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    command = [
        str(exe),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--default-bucket",
        bucket,
    ]
    return start_server(command, port, timeout_s=timeout_s)


def use_anonymous_beam_credentials() -> None:
    """Beam's GCS client is anonymous when no credentials are found; say so up front instead of
    letting it retry the credential lookup (about 20 s per process)."""
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True

"""A local Cloud Storage emulator (gcp-storage-emulator) for gs:// paths in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.s3 import free_port, start_server

REPO = Path(__file__).resolve().parents[2]


def start_gcs_emulator(bucket: str, timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start the emulator in memory with ``bucket``, generation preconditions honoured (as Cloud
    Storage does: the output lock relies on them; ``tests/support/gcs_preconditions.py``); return the
    process and its URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tests.support.gcs_preconditions",
        "--port",
        str(port),
        "--bucket",
        bucket,
    ]
    previous_cwd = os.getcwd()
    os.chdir(REPO)  # so that ``-m tests.support...`` resolves
    try:
        return start_server(command, port, timeout_s=timeout_s)
    finally:
        os.chdir(previous_cwd)


def use_anonymous_beam_credentials() -> None:
    """Beam's GCS client is anonymous when no credentials are found; say so up front instead of
    letting it retry the credential lookup (about 20 s per process)."""
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True

"""A local S3 server (moto) on loopback, as IDC's public bucket for s5cmd --no-sign-request."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

BUCKET = "idc-open-data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    command: list[str], port: int, *, timeout_s: float = 30.0, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a local server and wait until it accepts connections on ``port``; return it and its URL."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{Path(command[0]).name} did not start within {timeout_s} s")


def start_moto(timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``moto_server`` on a free loopback port; return the process and its endpoint URL."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    return start_server([str(moto), "-H", "127.0.0.1", "-p", str(port)], port, timeout_s=timeout_s)


def public_bucket(endpoint: str):  # type: ignore[no-untyped-def]
    """A boto3 client with IDC's bucket created public-read."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET, ACL="public-read")
    return client


def upload_series(client, path: Path) -> str:  # type: ignore[no-untyped-def]
    """Upload a folder (or one file) as IDC lays it out: s3://bucket/<uuid>/<uuid>.dcm."""
    series_uuid = str(uuid.uuid4())
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for f in files:
        client.upload_file(
            str(f), BUCKET, f"{series_uuid}/{uuid.uuid4()}.dcm", ExtraArgs={"ACL": "public-read"}
        )
    return f"s3://{BUCKET}/{series_uuid}/*"

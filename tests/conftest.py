"""Shared fixtures: phantom series, a local S3 server behind the real s5cmd, real CT."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.phantoms import Phantom, make_phantom  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_CT = REPO.parent / "shared" / "data" / "real-ct"
BUCKET = "idc-open-data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback, for s5cmd --endpoint-url."""
    port = _free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start within 30 s")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET, ACL="public-read")
    return client


@pytest.fixture(scope="session")
def upload_series(s3_client) -> Callable[[Path], str]:  # type: ignore[no-untyped-def]
    """Upload every file of a folder (or one file) as IDC does: s3://bucket/<uuid>/<uuid>.dcm."""

    def upload(path: Path) -> str:
        series_uuid = str(uuid.uuid4())
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        for f in files:
            s3_client.upload_file(
                str(f), BUCKET, f"{series_uuid}/{uuid.uuid4()}.dcm", ExtraArgs={"ACL": "public-read"}
            )
        return f"s3://{BUCKET}/{series_uuid}/*"

    return upload


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("phantoms")


@pytest.fixture(scope="session")
def phantom(phantom_dir: Path) -> Phantom:
    """One default phantom, shared read-only by tests that do not modify it."""
    return make_phantom(phantom_dir / "default", seed=1)


@pytest.fixture()
def real_ct() -> Path:
    if not REAL_CT.is_dir():
        pytest.skip(f"real CT series not present at {REAL_CT}")
    return REAL_CT

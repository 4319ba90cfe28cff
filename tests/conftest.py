"""Shared fixtures: phantom series, a local S3 server behind the real s5cmd, real CT."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import s3  # noqa: E402
from tests.support.phantoms import Phantom, make_phantom  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_CT = REPO.parent / "shared" / "data" / "real-ct"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback, for s5cmd --endpoint-url."""
    proc, endpoint = s3.start_moto()
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str):  # type: ignore[no-untyped-def]
    return s3.public_bucket(s3_endpoint)


@pytest.fixture(scope="session")
def upload_series(s3_client) -> Callable[[Path], str]:  # type: ignore[no-untyped-def]
    """Upload every file of a folder (or one file) as IDC does: s3://bucket/<uuid>/<uuid>.dcm."""
    return lambda path: s3.upload_series(s3_client, path)


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


@pytest.fixture(scope="session")
def gcs_bucket() -> Iterator[str]:
    """A bucket on a local GCS emulator; Beam's gs:// filesystem talks to it anonymously."""
    from tests.support.gcs import start_gcs_emulator, use_anonymous_beam_credentials

    bucket = "lnq-results"
    proc, url = start_gcs_emulator(bucket)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    use_anonymous_beam_credentials()
    yield bucket
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous
    proc.terminate()
    proc.wait(timeout=10)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``gpu`` run where torch sees a CUDA device (a lent GPU machine), else skip."""
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")

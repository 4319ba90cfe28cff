"""``lnq run`` with a model that carries code: the launcher refuses it before any series, in one
line, and the code never runs; ``--trust-model-code`` is the user's explicit word to load it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.isolated_targets import Payload
from tests.support.models import make_nnunet_folder

pytest.importorskip("nnunetv2", reason="nnunetv2 is the [nnunet] extra; make test installs it")


def test_a_checkpoint_with_a_payload_stops_the_run_before_any_series(phantom, tmp_path: Path) -> None:
    folder = make_nnunet_folder(tmp_path / "Dataset999_LNQTiny")
    checkpoint_path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    marker = tmp_path / "pwned"
    checkpoint["logging"] = {"train_losses": [Payload(str(marker))]}
    torch.save(checkpoint, checkpoint_path)
    cohort = tmp_path / "cohort.parquet"
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    write_cohort(cohort, [row])
    done = subprocess.run(
        [
            *LNQ,
            "run",
            "--cohort",
            str(cohort),
            "--output",
            str(tmp_path / "out"),
        ]
        + ["--model", f"nnunet:{folder}", "--device", "cpu", "--no-tta"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]  # a model that cannot be loaded, as a user's mistake
    assert (
        "--trust-model-code" in done.stderr and "makedirs" in done.stderr and "Traceback" not in done.stderr
    )
    assert not marker.exists() and not (tmp_path / "out" / "series").exists()
    shutil.rmtree(folder)

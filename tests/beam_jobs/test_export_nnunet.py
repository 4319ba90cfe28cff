"""nnU-Net's own tools accept the export, and every hand-off works with nnU-Net's real code: export
phantoms, ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``, train (nnU-Net's trainer,
a few iterations: ``tests/support/nnunet_training.py`` says why not ``nnUNetTrainer_1epoch``
here), then ``lnq run --model nnunet:...`` on the held-out cases, whose scores land in ``series``.
The point is the hand-offs, not the accuracy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beam_jobs.publish import read_table
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.phantoms import make_phantom

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DATASET = "Dataset501_LNQ"


def nnunet_env(base: Path, *, augmentation_workers: int = 1) -> dict[str, str]:
    """nnU-Net's folders under ``base``, one process per step; ``augmentation_workers`` 0 runs the
    training's data augmentation in the trainer's own process (the planner needs at least 1)."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "nnUNet_raw": str(base / "raw"),
        "nnUNet_preprocessed": str(base / "preprocessed"),
        "nnUNet_results": str(base / "results"),
        "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": str(augmentation_workers),
    }


def _run(command: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def planned(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[dict], subprocess.CompletedProcess[str]]:
    """Four partially annotated training phantoms and two fully annotated held-out ones, exported
    into ``nnUNet_raw`` by ``lnq export-training``, then planned and preprocessed by nnU-Net."""
    base = tmp_path_factory.mktemp("nnunet")
    rows = []
    for i in range(6):
        p = make_phantom(
            base / f"p{i}",
            patient_id=f"case_{i:04d}",
            seed=60 + i,
            shape_zyx=(16, 48, 48),
            annotation="full" if i >= 4 else "partial",
            z_descending=i == 1,
        )
        rows.append(cohort_row(p, ct_url=str(p.ct_dir), seg_url=str(p.seg_path)))
    cohort = base / "cohort.parquet"
    write_cohort(cohort, rows)
    env = nnunet_env(base)
    export = _run(
        [
            *LNQ,
            "export-training",
            "--cohort",
            str(cohort),
            "--output",
            env["nnUNet_raw"],
        ],
        env,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    plan = _run(
        [
            str(BIN / "nnUNetv2_plan_and_preprocess"),
            "-d",
            "501",
            "-c",
            "3d_fullres",
            "--verify_dataset_integrity",
            "-np",
            "1",
        ],
        env,
    )
    return base, rows, plan


@pytest.mark.slow
def test_nnunet_plans_and_preprocesses_the_export(planned) -> None:  # type: ignore[no-untyped-def]
    base, _, plan = planned
    assert plan.returncode == 0, (plan.stdout[-2000:], plan.stderr[-3000:])
    assert "Verifying" in plan.stdout or "verify" in plan.stdout.lower()
    raw, preprocessed = base / "raw" / DATASET, base / "preprocessed" / DATASET
    # nnU-Net's planner copies our patient-level folds to where its trainer reads them
    assert json.loads((preprocessed / "splits_final.json").read_text()) == json.loads(
        (raw / "splits_final.json").read_text()
    )
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert plans["image_reader_writer"] == "SimpleITKIO"
    labels = json.loads((preprocessed / "dataset.json").read_text())["labels"]
    assert labels == {"background": 0, "lymph_node": 1, "ignore": 2}
    assert len(list((preprocessed / "gt_segmentations").glob("*.nii.gz"))) == 4  # the training cases


@pytest.mark.slow
def test_nnunets_check_can_fail(planned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The check above is a real one: a label value nnU-Net was not told about is refused."""
    import SimpleITK as sitk
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    base, _, _ = planned
    copy = tmp_path / DATASET
    shutil.copytree(base / "raw" / DATASET, copy, ignore=shutil.ignore_patterns("_lnq"))
    label = next((copy / "labelsTr").glob("*.nii.gz"))
    image = sitk.ReadImage(str(label))
    array = sitk.GetArrayFromImage(image)
    array[array == 2] = 3
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    sitk.WriteImage(damaged, str(label), useCompression=True)
    with pytest.raises(RuntimeError, match="contained unexpected labels"):
        verify_dataset_integrity(str(copy), num_processes=1)


@pytest.mark.slow
def test_train_then_lnq_run_scores_the_held_out_cases(planned) -> None:  # type: ignore[no-untyped-def]
    base, rows, plan = planned
    assert plan.returncode == 0, plan.stderr[-3000:]
    env = nnunet_env(base, augmentation_workers=0)
    trained = _run(
        [
            sys.executable,
            "-m",
            "tests.support.nnunet_training",
            str(base / "preprocessed" / DATASET),
            "--fold",
            "0",
        ],
        env,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    fold = Path(trained.stdout.strip().splitlines()[-1])
    model = fold.parent
    assert (fold / "checkpoint_final.pth").is_file()
    # nnU-Net validated fold 0 on the cases our splits_final.json put there
    splits = json.loads((base / "raw" / DATASET / "splits_final.json").read_text())
    validated = sorted(p.name.removesuffix(".nii.gz") for p in (fold / "validation").glob("*.nii.gz"))
    assert validated == splits[0]["val"]

    held_out = [r for r in rows if r["annotation"] == "full"]
    cohort = base / "held_out.parquet"
    write_cohort(cohort, held_out)
    out = base / "scored"
    run = _run(
        [
            *LNQ,
            "run",
            "--cohort",
            str(cohort),
            "--output",
            str(out),
            "--model",
            f"nnunet:{model}",
            "--folds",
            "0",
            "--device",
            "cpu",
            "--no-tta",
        ],
        env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    series = read_table(str(out), "series").to_pylist()
    assert sorted(s["ct_series_instance_uid"] for s in series) == sorted(
        r["ct_series_instance_uid"] for r in held_out
    )
    for s in series:
        assert s["status"] == "ok" and s["model"] == f"nnunet:{model}"
        assert s["dsc"] is not None and np.isfinite(s["dsc"])  # scored against the expert SEG
        assert s["n_reference_nodes"] > 0

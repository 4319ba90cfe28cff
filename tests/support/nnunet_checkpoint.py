"""A real nnU-Net v2 checkpoint, written by nnunetv2's own trainer on tiny phantoms.

nnunetv2 plans, preprocesses and trains (its default trainer cut to one epoch of two iterations) in
a child process of its own, because it reads its ``nnUNet_raw``/``nnUNet_preprocessed``/
``nnUNet_results`` folders from the environment when it is imported. The checkpoint it saves
holds what real ones hold (optimizer state, the training log with numpy scalars, the best EMA
Dice): what ``torch.load(weights_only=True)`` must accept with nnU-Net's few safe globals.
Run as a script: ``python -m tests.support.nnunet_checkpoint OUT``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DATASET_ID = 987
DATASET_NAME = f"Dataset{DATASET_ID}_LNQTrained"


def trained_model_folder(work: Path, *, timeout_s: float = 600.0) -> Path:
    """Train in a child process and return the results folder (``fold_all/checkpoint_final.pth``)."""
    env = {
        **os.environ,
        "nnUNet_raw": str(work / "raw"),
        "nnUNet_preprocessed": str(work / "preprocessed"),
        "nnUNet_results": str(work / "results"),
        "nnUNet_n_proc_DA": "1",  # one augmentation worker (0 fails the planner: set_num_threads(0))
        "nnUNet_compile": "false",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.nnunet_checkpoint", str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=Path(__file__).resolve().parents[2],
    )
    if done.returncode != 0:
        raise RuntimeError(f"nnU-Net training failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return work / "results" / DATASET_NAME / "nnUNetTrainer__nnUNetPlans__3d_fullres"


def _write_raw(raw: Path, n_cases: int = 2) -> None:
    import numpy as np
    import SimpleITK as sitk

    folder = raw / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for case in range(n_cases):
        hu = rng.normal(-100.0, 10.0, size=(16, 32, 32)).astype(np.float32)
        label = np.zeros(hu.shape, dtype=np.uint8)
        label[5:11, 10 + case : 18 + case, 12:20] = 1
        hu[label > 0] = 40.0
        for array, path in (
            (hu, folder / "imagesTr" / f"case_{case:03d}_0000.nii.gz"),
            (label, folder / "labelsTr" / f"case_{case:03d}.nii.gz"),
        ):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((1.6, 1.6, 2.5))
            sitk.WriteImage(image, str(path))
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lymph_node": 1},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset))


def _train(work: Path) -> None:
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as base_trainer
    from nnunetv2.utilities.file_path_utilities import get_output_folder  # noqa: F401  (paths read)

    torch.set_num_threads(1)
    _write_raw(work / "raw")
    extract_fingerprints([DATASET_ID], num_processes=1)
    plan_experiments([DATASET_ID])
    preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(1,))

    class nnUNetTrainer(base_trainer.nnUNetTrainer):  # noqa: N801  (the name inference looks up)
        """nnU-Net's default trainer cut to one epoch of two iterations. It keeps the default's
        name, so inference finds nnunetv2's own class (the first module nnunetv2 searches: the
        search imports every trainer module until it finds the name, and in this environment a
        variant's torchvision import fails)."""

        def __init__(  # nnU-Net keeps its trainers' arguments by their names: an explicit signature
            self,
            plans: dict,
            configuration: str,
            fold: int,
            dataset_json: dict,
            device: torch.device = torch.device("cpu"),
        ):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 1
            self.num_iterations_per_epoch = 2
            self.num_val_iterations_per_epoch = 1

    preprocessed = work / "preprocessed" / DATASET_NAME
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # what nnUNetv2_train sets for a fresh run
    dataset = json.loads((preprocessed / "dataset.json").read_text())
    trainer = nnUNetTrainer(plans, "3d_fullres", "all", dataset, device=torch.device("cpu"))
    trainer.run_training()


if __name__ == "__main__":
    _train(Path(sys.argv[1]))

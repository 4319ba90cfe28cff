"""Train nnU-Net v2 for a few iterations on a preprocessed dataset, with nnU-Net's own trainer code.

Run as ``python -m tests.support.nnunet_training PREPROCESSED_DATASET_DIR --fold F --iterations N``
with ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` set (nnunetv2 reads them when
it is imported, hence a process of its own). The results land where ``nnUNetv2_train`` puts them:
``$nnUNet_results/Dataset<N>_<NAME>/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_F/``.

Why not ``nnUNetv2_train -tr nnUNetTrainer_1epoch``: that trainer runs 250 training and 50
validation iterations (two training and one validation iteration on the test's 16 x 48 x 48 phantoms
took 1.09 s on this machine's 2 cores: roughly two minutes for its epoch at that rate), and nnU-Net
finds any trainer but the default one by importing every trainer module, including
``primus_trainers``, whose ``timm`` imports ``torchvision``: the PyPI build of torchvision is linked
against CUDA and cannot be imported beside CPU-only torch, so ``nnUNetv2_train -tr
nnUNetTrainer_1epoch`` (and ``lnq run`` on the model it trains) stops at that import here. The
trainer below is nnU-Net's default trainer with fewer iterations; it keeps the default trainer's
*name*, because a checkpoint names its trainer class and nnU-Net's predictor finds that class by
name inside nnunetv2 (a subclass named otherwise could not be loaded by ``lnq run --model
nnunet:...`` nor by ``nnUNetv2_predict``). The network, plans, checkpoint layout and the training
loop are nnU-Net's own; only the number of iterations differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _trainer_class():  # type: ignore[no-untyped-def]
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as DefaultTrainer

    class nnUNetTrainer(DefaultTrainer):  # noqa: N801 - the default trainer's name (see the module)
        """nnU-Net's default trainer for one epoch of a few iterations."""

        ITERATIONS = 2

        # nnU-Net checks that a trainer's __init__ keeps this explicit signature
        def __init__(
            self,
            plans: dict,
            configuration: str,
            fold: int,
            dataset_json: dict,
            device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own default
        ):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 1
            self.num_iterations_per_epoch = self.ITERATIONS
            self.num_val_iterations_per_epoch = 1

    return nnUNetTrainer


def train(preprocessed: str, *, fold: int, iterations: int, configuration: str = "3d_fullres") -> str:
    """Train ``fold`` on the CPU, run nnU-Net's validation of that fold, return the fold folder."""
    import torch

    with open(os.path.join(preprocessed, "nnUNetPlans.json"), encoding="utf-8") as f:
        plans = json.load(f)
    with open(os.path.join(preprocessed, "dataset.json"), encoding="utf-8") as f:
        dataset_json = json.load(f)
    plans["continue_training"] = False  # nnUNetv2_train's entry point adds this key
    trainer_class = _trainer_class()
    trainer_class.ITERATIONS = iterations
    trainer = trainer_class(plans, configuration, fold, dataset_json, torch.device("cpu"))
    trainer.run_training()
    trainer.perform_actual_validation()
    return str(trainer.output_folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preprocessed", help="nnUNet_preprocessed/Dataset<N>_<NAME>")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args(argv)
    print(train(args.preprocessed, fold=args.fold, iterations=args.iterations))
    return 0


if __name__ == "__main__":  # nnU-Net's validation starts worker processes that import this module
    sys.exit(main())

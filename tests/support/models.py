"""Tiny models made in tests: TorchScript modules with sidecars and nnU-Net v2 results folders."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.demo.model import HuWindow, save_torchscript

__all__ = [
    "NNUNET_CT_FULLRES_PATCH",
    "NNUNET_CT_FULLRES_STAGES",
    "HuWindow",
    "TinyConvNet",
    "make_nnunet_folder",
    "save_torchscript",
]


class TinyConvNet(torch.nn.Module):
    """A small random 3D conv net, for timing: normalises HU itself, as the sidecar contract says."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(1, width, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv3d(width, width, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv3d(width, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(torch.clamp(x, -1000.0, 1000.0) / 500.0)


NNUNET_CT_FULLRES_STAGES = {
    # a network of the size nnU-Net v2's default planner gives 3d_fullres on CT: six stages of
    # PlainConvUNet, 32 to 320 features, two convolutions per stage; the in-plane-only first kernel
    # and last stride and the patch (64 x 192 x 192) stand for anisotropic slices of about 2.5 mm.
    # Representative of the size, not the plan of any LNQ2023 team (planning needs the data).
    "features_per_stage": [32, 64, 128, 256, 320, 320],
    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
    "n_conv_per_stage": [2, 2, 2, 2, 2, 2],
    "n_conv_per_stage_decoder": [2, 2, 2, 2, 2],
}
NNUNET_CT_FULLRES_PATCH = (64, 192, 192)


def make_nnunet_folder(
    folder: Path,
    *,
    spacing_zyx: tuple[float, float, float] = (2.5, 1.6, 1.6),
    patch_size: tuple[int, int, int] = (16, 32, 32),
    folds: tuple[int, ...] = (0,),
    seed: int = 0,
    stages: dict | None = None,
    foreground_logit_offset: float = 0.0,
) -> Path:
    """An nnU-Net v2 results folder (3d_fullres, PlainConvUNet, random weights) of the published layout.

    ``stages``: the network's ``features_per_stage``, ``kernel_sizes``, ``strides``,
    ``n_conv_per_stage`` and ``n_conv_per_stage_decoder`` (default: a tiny three-stage net;
    :data:`NNUNET_CT_FULLRES_STAGES` is the size nnU-Net plans for CT).

    ``foreground_logit_offset``: subtracted from the output layer's foreground bias. Random weights
    call about half the voxels foreground, hundreds of thousands of speckle "nodes" per series, whose
    measurement and SEG writing would swamp the CPU stages of a throughput benchmark; an offset of
    about eight standard deviations of the logit difference (3.6 for the CT-size net) left about
    3,200 per 512 x 512 x 108 phantom (``bench/gpu_throughput.py`` on an H200)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    stages = stages or {
        "features_per_stage": [4, 8, 16],
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
    }
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": len(stages["features_per_stage"]),
            "features_per_stage": stages["features_per_stage"],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": stages["kernel_sizes"],
            "strides": stages["strides"],
            "n_conv_per_stage": stages["n_conv_per_stage"],
            "n_conv_per_stage_decoder": stages["n_conv_per_stage_decoder"],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    plans = {
        "dataset_name": "Dataset999_LNQTiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing_zyx),
        "original_median_shape_after_transp": [40, 128, 128],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch_size),
                "median_image_size_in_voxels": [40, 128, 128],
                "spacing": list(spacing_zyx),
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {
                    "is_seg": False,
                    "order": 3,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_seg_kwargs": {
                    "is_seg": True,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": arch,
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 3071.0,
                "mean": 40.0,
                "median": 40.0,
                "min": -1024.0,
                "percentile_00_5": -200.0,
                "percentile_99_5": 300.0,
                "std": 60.0,
            }
        },
    }
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lymph_node": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    torch.manual_seed(seed)
    for fold in folds:
        network = get_network_from_plans(
            arch["network_class_name"],
            arch["arch_kwargs"],
            arch["_kw_requires_import"],
            input_channels=1,
            output_channels=2,
            allow_init=True,
            deep_supervision=False,
        )
        if foreground_logit_offset:
            with torch.no_grad():
                network.decoder.seg_layers[-1].bias[1] -= foreground_logit_offset
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(
            {
                "network_weights": network.state_dict(),
                "trainer_name": "nnUNetTrainer",
                "init_args": {
                    "plans": plans,
                    "configuration": "3d_fullres",
                    "fold": fold,
                    "dataset_json": dataset,
                },
                "inference_allowed_mirroring_axes": (0, 1, 2),
            },
            folder / f"fold_{fold}" / "checkpoint_final.pth",
        )
    return folder

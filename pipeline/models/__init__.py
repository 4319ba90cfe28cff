"""Segmentation models: nnU-Net v2 results folders and TorchScript modules."""

from pipeline.models.base import ModelError, Prediction, SegmentationModel, probabilities_to_ct_grid
from pipeline.models.spec import ModelSpec, load_model, parse_model_spec, resolve_device, shared_model

__all__ = [
    "ModelError",
    "ModelSpec",
    "Prediction",
    "SegmentationModel",
    "load_model",
    "parse_model_spec",
    "probabilities_to_ct_grid",
    "resolve_device",
    "shared_model",
]

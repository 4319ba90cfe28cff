"""Segmentation models: nnU-Net v2 results folders and TorchScript modules."""

from pipeline.errors import ModelError
from pipeline.models.base import Prediction, SegmentationModel, probabilities_to_ct_grid
from pipeline.models.spec import ModelSpec, load_model, model_label, parse_model_spec, resolve_device

__all__ = [
    "ModelError",
    "ModelSpec",
    "Prediction",
    "SegmentationModel",
    "load_model",
    "model_label",
    "parse_model_spec",
    "probabilities_to_ct_grid",
    "resolve_device",
]

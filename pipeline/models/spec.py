"""What model a run uses (``reference``, ``nnunet:DIR`` or ``torchscript:FILE``), and loading it.

The reference mode runs no model: it is represented by ``None``, not by a model kind.
Loading is not cached here: the Beam job shares one loaded model per worker process
through Beam's own ``apache_beam.utils.shared.Shared``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.enums import DEVICES, NNUNET_CHECKPOINT, NNUNET_STEP_SIZE, REFERENCE_MODEL, ModelKind
from pipeline.errors import ModelError

if TYPE_CHECKING:  # torch and the model code load only when a model does
    import torch

    from pipeline.models.base import SegmentationModel

__all__ = ["DEVICES", "ModelSpec", "load_model", "model_label", "parse_model_spec", "resolve_device"]


@dataclass(frozen=True)
class ModelSpec:
    """A model to run (``kind:path``) and how to run it."""

    kind: ModelKind
    path: str
    device: str = "auto"
    folds: tuple[int | str, ...] = field(default=())
    checkpoint: str = NNUNET_CHECKPOINT
    step_size: float = NNUNET_STEP_SIZE
    tta: bool = True
    trust_code: bool = False
    """Load an nnU-Net checkpoint as nnunetv2 does (its pickle may run code) and any network class its
    plans name: only for a model whose source is trusted (``pipeline.models.nnunet_loading``)."""

    @property
    def label(self) -> str:
        """The ``model`` column: what the user asked for."""
        return f"{self.kind.value}:{self.path}"

    def artifacts(self) -> tuple[str, ...]:
        """Paths that make up the model (a file and its sidecar, or one folder), to copy it whole."""
        if self.kind == ModelKind.TORCHSCRIPT:
            from pipeline.models.torchscript import sidecar_path

            return (self.path, sidecar_path(self.path))
        return (self.path.rstrip("/"),)


def model_label(spec: ModelSpec | None) -> str:
    """The ``model`` column of a run: ``reference`` without a model."""
    return REFERENCE_MODEL if spec is None else spec.label


def parse_model_spec(
    text: str,
    *,
    device: str = "auto",
    folds: tuple[int | str, ...] = (),
    checkpoint: str = NNUNET_CHECKPOINT,
    step_size: float = NNUNET_STEP_SIZE,
    tta: bool = True,
    trust_code: bool = False,
) -> ModelSpec | None:
    """``reference`` (None: no model), ``nnunet:DIR`` or ``torchscript:FILE`` plus options, checked."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {DEVICES}")
    if not 0.0 < step_size <= 1.0:
        raise ValueError(f"sliding-window step size {step_size} must be in (0, 1]")
    kind, _, path = text.partition(":")
    if kind == REFERENCE_MODEL:
        if path:
            raise ValueError(f"model {text!r}: the reference mode takes no path")
        return None
    try:
        model_kind = ModelKind(kind)
    except ValueError:
        raise ValueError(f"model {text!r}: expected reference, nnunet:DIR or torchscript:FILE") from None
    if not path:
        raise ValueError(f"model {text!r}: needs a path, as in {kind}:PATH")
    return ModelSpec(
        kind=model_kind,
        path=path,
        device=device,
        folds=folds,
        checkpoint=checkpoint,
        step_size=step_size,
        tta=tta,
        trust_code=trust_code,
    )


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        cuda = torch.version.cuda or "none: a CPU build"
        raise ModelError(
            f"a GPU was asked for, but torch {torch.__version__} (CUDA {cuda}) sees no CUDA device "
            f"({_driver()}); refusing to run on the CPU"
        )
    return torch.device(name)


def _driver() -> str:
    """What this machine says of its NVIDIA driver, for the message of a GPU that torch cannot use."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            first = f.readline().strip()
        return f"driver: {first}" if first else "driver: unreadable"
    except OSError:
        return "no NVIDIA driver loaded"


def load_model(spec: ModelSpec) -> SegmentationModel:
    """A newly loaded model for ``spec`` (a local path; remote models are copied first)."""
    if not os.path.exists(spec.path):
        raise ModelError(f"model {spec.path} does not exist")
    device = resolve_device(spec.device)
    if spec.kind == ModelKind.TORCHSCRIPT:
        from pipeline.models.torchscript import TorchScriptModel

        return TorchScriptModel(spec.path, device=device)
    from pipeline.models.nnunet import NnUNetModel

    return NnUNetModel(
        spec.path,
        device=device,
        folds=spec.folds or None,
        checkpoint=spec.checkpoint,
        step_size=spec.step_size,
        tta=spec.tta,
        trust_code=spec.trust_code,
    )

"""``--model`` specifications and loading a model once per process."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from pipeline.models.base import ModelError, SegmentationModel

KINDS = ("reference", "nnunet", "torchscript")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ModelSpec:
    """What to run: ``reference`` (no model), ``nnunet:DIR`` or ``torchscript:FILE``, and how."""

    kind: str = "reference"
    path: str | None = None
    device: str = "auto"
    folds: tuple[int | str, ...] = field(default=())
    checkpoint: str = "checkpoint_final.pth"
    step_size: float = 0.5
    tta: bool = True

    @property
    def is_reference(self) -> bool:
        return self.kind == "reference"

    @property
    def label(self) -> str:
        """The ``model`` column: what the user asked for."""
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_model_spec(text: str, **options: object) -> ModelSpec:
    """``reference``, ``nnunet:DIR`` or ``torchscript:FILE`` plus options, checked."""
    kind, _, path = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"--model {text!r}: expected reference, nnunet:DIR or torchscript:FILE")
    if kind == "reference" and path:
        raise ValueError("--model reference takes no path")
    if kind != "reference" and not path:
        raise ValueError(f"--model {kind}: needs a path, as in {kind}:PATH")
    spec = ModelSpec(kind=kind, path=path or None, **options)  # type: ignore[arg-type]
    if spec.device not in DEVICES:
        raise ValueError(f"--device {spec.device!r} is not one of {DEVICES}")
    if not 0.0 < spec.step_size <= 1.0:
        raise ValueError(f"--step-size {spec.step_size} must be in (0, 1]")
    return spec


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def load_model(spec: ModelSpec) -> SegmentationModel:
    """A new model instance for ``spec`` (use :func:`shared_model` to reuse one per process)."""
    device = resolve_device(spec.device)
    if spec.kind == "torchscript":
        from pipeline.models.torchscript import TorchScriptModel

        assert spec.path is not None
        return TorchScriptModel(spec.path, device=device)
    if spec.kind == "nnunet":
        from pipeline.models.nnunet import NnUNetModel

        assert spec.path is not None
        return NnUNetModel(
            spec.path,
            device=device,
            folds=spec.folds or None,
            checkpoint=spec.checkpoint,
            step_size=spec.step_size,
            tta=spec.tta,
        )
    raise ModelError("the reference mode runs no model")


_CACHE: dict[ModelSpec, SegmentationModel] = {}
_CACHE_LOCK = threading.Lock()


def shared_model(spec: ModelSpec) -> SegmentationModel:
    """One loaded model per process and spec, shared by every thread (never one per series)."""
    with _CACHE_LOCK:
        model = _CACHE.get(spec)
        if model is None:
            model = _CACHE[spec] = load_model(spec)
        return model

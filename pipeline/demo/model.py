"""The demo's model: a TorchScript module that thresholds HU, with its sidecar.

Not a lymph node model: it marks every voxel whose HU lies in a soft-tissue window, so on the
phantoms it finds the nodes and also the chest wall (the same HU), the kind of mistake the
report's scores and quality flags exist to show. Tests use it too: content only, so its
prediction lines up with a phantom's nodes only if the geometry is handled right.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


class HuWindow(torch.nn.Module):
    """Logits that are positive where HU lies within ``center +- half_width``."""

    def __init__(self, center: float, half_width: float, gain: float = 4.0, channels: int = 1):
        super().__init__()
        self.center = center
        self.half_width = half_width
        self.gain = gain
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        foreground = self.gain * (self.half_width - torch.abs(x - self.center))
        if self.channels == 1:
            return foreground
        return torch.cat([torch.zeros_like(foreground), foreground], dim=1)


def save_torchscript(
    module: torch.nn.Module,
    path: Path,
    *,
    name: str = "tiny",
    version: str = "1",
    spacing_mm: list[float] | None = None,
    patch_size: tuple[int, int, int] = (16, 48, 48),
    overlap: float = 0.5,
    output: str = "sigmoid",
) -> Path:
    """Script ``module`` to ``path`` and write its sidecar ``path.with_suffix('.json')`` (the
    contract ``--model torchscript:FILE`` reads: see the README's "Models")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(module.eval()).save(str(path))
    sidecar = {
        "name": name,
        "version": version,
        "spacing_mm": spacing_mm,
        "patch_size": list(patch_size),
        "overlap": overlap,
        "output": output,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path

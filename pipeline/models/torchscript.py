"""TorchScript models with a JSON sidecar: sliding-window inference with blended overlaps.

``model.pt`` beside ``model.json``::

    {"name": "...", "version": "...", "spacing_mm": [z, y, x] or null, "patch_size": [z, y, x],
     "overlap": 0.5, "output": "sigmoid" | "softmax"}

Input is float32 ``(N, 1, z, y, x)`` HU on that grid (the module normalises itself).
'sigmoid': one channel of logits, foreground where the sigmoid is > 0.5.
'softmax': C channels, foreground where the argmax is 1, i.e. where channel 1 has the
largest probability; the foreground probability carried back to the CT grid is then
that of channel 1 against the largest other channel, thresholded at 0.5.
Windows are blended with Gaussian weights by MONAI's ``sliding_window_inference``;
windows run on the model's device and the stitched output stays on the CPU, so GPU
memory is bounded by the patch, not by the series.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from pipeline.dicom.volume import CtVolume, float3, int3
from pipeline.models.base import ModelError, Prediction, resample_ct

OUTPUTS = ("sigmoid", "softmax")


@dataclass(frozen=True)
class TorchScriptSidecar:
    name: str
    version: str
    spacing_mm: tuple[float, float, float] | None
    patch_size: tuple[int, int, int]
    overlap: float = 0.5
    output: str = "sigmoid"

    @classmethod
    def read(cls, path: str) -> TorchScriptSidecar:
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"model sidecar {path} is unreadable: {exc}") from exc
        missing = [k for k in ("name", "version", "patch_size") if k not in raw]
        if missing:
            raise ModelError(f"model sidecar {path} lacks {missing}")
        spacing = raw.get("spacing_mm")
        patch = raw["patch_size"]
        if not (
            isinstance(patch, list) and len(patch) == 3 and all(isinstance(v, int) and v > 0 for v in patch)
        ):
            raise ModelError(
                f"model sidecar {path}: patch_size {patch!r} is not three positive integers [z, y, x]"
            )
        if spacing is not None and not (
            isinstance(spacing, list) and len(spacing) == 3 and all(float(v) > 0 for v in spacing)
        ):
            raise ModelError(f"model sidecar {path}: spacing_mm {spacing!r} is not [z, y, x] mm or null")
        overlap = float(raw.get("overlap", 0.5))
        if not 0.0 <= overlap < 1.0:
            raise ModelError(f"model sidecar {path}: overlap {overlap} is not in [0, 1)")
        output = raw.get("output", "sigmoid")
        if output not in OUTPUTS:
            raise ModelError(f"model sidecar {path}: output {output!r} is not one of {OUTPUTS}")
        return cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            spacing_mm=None if spacing is None else float3(spacing),
            patch_size=int3(patch),
            overlap=overlap,
            output=output,
        )


def sidecar_path(model_path: str) -> str:
    return os.path.splitext(model_path)[0] + ".json"


class TorchScriptModel:
    """A loaded TorchScript module; ``predict`` is safe to call from several threads."""

    def __init__(self, path: str, *, device: torch.device, sw_batch_size: int = 1):
        if not os.path.isfile(path):
            raise ModelError(f"TorchScript model {path} does not exist")
        self.sidecar = TorchScriptSidecar.read(sidecar_path(path))
        self.name, self.version = self.sidecar.name, self.sidecar.version
        self.device = device
        self.sw_batch_size = sw_batch_size
        try:
            self.module = torch.jit.load(path, map_location=device).eval()
        except Exception as exc:
            raise ModelError(f"TorchScript model {path} cannot be loaded: {exc}") from exc
        self._lock = threading.Lock()  # one series at a time per model copy bounds device memory

    def predict(self, ct: CtVolume) -> Prediction:
        start = time.perf_counter()
        hu, grid = resample_ct(ct, self.sidecar.spacing_mm)
        with self._lock, torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(hu))[None, None]
            logits = sliding_window_inference(
                x,
                roi_size=self.sidecar.patch_size,
                sw_batch_size=self.sw_batch_size,
                predictor=self.module,
                overlap=self.sidecar.overlap,
                mode="gaussian",
                padding_mode="constant",
                cval=-1024.0,
                sw_device=self.device,
                device="cpu",
            )
            assert isinstance(logits, torch.Tensor)
            probability = self._foreground_probability(logits[0], ct)
        # on the model's grid: the caller brings it to the CT's (Prediction.on_ct_grid) where it likes
        return Prediction(probabilities=probability, grid=grid, inference_s=time.perf_counter() - start)

    def _foreground_probability(self, logits: torch.Tensor, ct: CtVolume) -> np.ndarray:
        channels = logits.shape[0]
        if self.sidecar.output == "sigmoid":
            if channels != 1:
                raise ModelError(
                    f"model {self.name} declares 'sigmoid' output but returned {channels} channels",
                    series_uid=ct.series_uid,
                )
            return logits[0].sigmoid_().numpy()  # in place: no second model-grid array
        if channels < 2:
            raise ModelError(
                f"model {self.name} declares 'softmax' output but returned {channels} channel",
                series_uid=ct.series_uid,
            )
        probs = torch.softmax(logits, dim=0)
        others = torch.cat([probs[:1], probs[2:]]).amax(dim=0)
        # > 0.5 exactly where channel 1 beats every other channel (its argmax is 1)
        return (0.5 + (probs[1] - others) / 2.0).numpy()

"""TorchScript models with a JSON sidecar: sliding-window inference with blended overlaps.

``model.pt`` beside ``model.json``::

    {"name": "...", "version": "...", "spacing_mm": [z, y, x] or null, "patch_size": [z, y, x],
     "overlap": 0.5, "output": "sigmoid" | "softmax"}

Input is float32 ``(N, 1, z, y, x)`` HU on that grid (the module normalises itself).
'sigmoid': one channel of logits, foreground where the sigmoid is > 0.5.
'softmax': C channels, foreground where the argmax is 1, i.e. where channel 1 has the
largest probability; the foreground probability carried back to the CT grid is then
that of channel 1 against the largest other channel, thresholded at 0.5.
Windows are placed and blended with Gaussian weights as MONAI's ``sliding_window_inference``
places and blends them (the same result), a band of slices at a time
(:mod:`pipeline.models.windows`): windows run on the model's device, one batch at a time under
the model's lock, and the stitched output stays on the CPU, so GPU memory is bounded by the
patch and CPU memory by a band, not by the series.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.geometry import CtVolume, float3, int3
from pipeline.models.base import ForwardLock, ModelError, Prediction, ct_rows, model_grid
from pipeline.models.windows import ArraySink, NpySink, sliding_window_probabilities

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
        if not isinstance(raw, dict):
            raise ModelError(f"model sidecar {path} is not a JSON object")
        missing = [k for k in ("name", "version", "patch_size") if k not in raw]
        if missing:
            raise ModelError(f"model sidecar {path} lacks {missing}")
        spacing = raw.get("spacing_mm")
        patch = raw["patch_size"]
        if not (
            isinstance(patch, list)
            and len(patch) == 3
            and all(_number(v) and isinstance(v, int) and v > 0 for v in patch)
        ):
            raise ModelError(
                f"model sidecar {path}: patch_size {patch!r} is not three positive integers [z, y, x]"
            )
        if spacing is not None and not (
            isinstance(spacing, list) and len(spacing) == 3 and all(_positive_number(v) for v in spacing)
        ):
            raise ModelError(f"model sidecar {path}: spacing_mm {spacing!r} is not [z, y, x] mm or null")
        overlap = raw.get("overlap", 0.5)
        if not (_number(overlap) and 0.0 <= overlap < 1.0):
            raise ModelError(f"model sidecar {path}: overlap {overlap!r} is not a number in [0, 1)")
        moving = [r for r in patch if r > 1]  # a window one voxel deep moves by one voxel anyway
        if moving and min(moving) * (1.0 - overlap) < 1.0:
            raise ModelError(
                f"model sidecar {path}: overlap {overlap!r} moves a window of patch_size {patch} by "
                f"{min(moving) * (1.0 - overlap):.3g} voxels, less than one (the windows would be placed "
                f"one voxel apart, thousands of times as many); the overlap must be at most "
                f"{1.0 - 1.0 / min(moving):.4g}"
            )
        output = raw.get("output", "sigmoid")
        if output not in OUTPUTS:
            raise ModelError(f"model sidecar {path}: output {output!r} is not one of {OUTPUTS}")
        return cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            spacing_mm=None if spacing is None else float3(spacing),
            patch_size=int3(patch),
            overlap=float(overlap),
            output=output,
        )


def _number(value: object) -> bool:
    """A finite JSON number (not a bool, a string or null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_number(value: object) -> bool:
    return _number(value) and float(value) > 0  # type: ignore[arg-type]


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
        self.forward_lock: ForwardLock = threading.Lock()
        """One batch of windows at a time per model copy (the model host counts the time a series
        waits for it, which is not that series' own)."""

    def predict(self, ct: CtVolume, *, save_to: str | None = None) -> Prediction:
        """Foreground probabilities on the model's grid: in memory, or written to ``save_to`` (a
        ``.npy``) band by band, so that the worker never holds them whole."""
        start = time.perf_counter()
        grid = model_grid(ct, self.sidecar.spacing_mm)
        size = grid.size_zyx
        sink: ArraySink | NpySink = ArraySink(size) if save_to is None else NpySink(save_to, size)
        try:  # the windows run in inference mode (sliding_window_probabilities)
            sliding_window_probabilities(
                functools.partial(ct_rows, ct, grid),
                size,
                roi_zyx=self.sidecar.patch_size,
                overlap=self.sidecar.overlap,
                forward=self._forward,
                to_probability=functools.partial(self._foreground_probability, series_uid=ct.series_uid),
                sink=sink,
                cval=-1024.0,
                sw_batch_size=self.sw_batch_size,
                sw_device=self.device,
                series_uid=ct.series_uid or None,
            )
            sink.close()
        except BaseException:
            sink.abort()
            raise
        # on the model's grid: the caller brings it to the CT's (Prediction.on_ct_grid) where it likes
        return Prediction(
            probabilities=sink.result(),
            grid=grid,
            inference_s=time.perf_counter() - start,
            saved_to=save_to,
        )

    def _forward(self, windows: torch.Tensor) -> torch.Tensor:
        # one batch of windows at a time on the model: bounds device memory by the batch, and lets
        # another series make its input and blend its output meanwhile
        with self.forward_lock:
            return self.module(windows)

    def _foreground_probability(self, logits: torch.Tensor, *, series_uid: str) -> np.ndarray:
        """``[C, z, y, x]`` blended logits of some slices to foreground probability ``[z, y, x]``."""
        channels = logits.shape[0]
        if self.sidecar.output == "sigmoid":
            if channels != 1:
                raise ModelError(
                    f"model {self.name} declares 'sigmoid' output but returned {channels} channels",
                    series_uid=series_uid or None,
                )
            return logits[0].sigmoid_().numpy()
        if channels < 2:
            raise ModelError(
                f"model {self.name} declares 'softmax' output but returned {channels} channel",
                series_uid=series_uid or None,
            )
        probs = torch.softmax(logits, dim=0)
        others = torch.cat([probs[:1], probs[2:]]).amax(dim=0)
        # > 0.5 exactly where channel 1 beats every other channel (its argmax is 1)
        return (0.5 + (probs[1] - others) / 2.0).numpy()

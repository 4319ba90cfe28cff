"""nnU-Net v2 trained model folders (as the LNQ2023 teams published them), through nnunetv2's predictor.

The folder holds ``dataset.json``, ``plans.json`` and ``fold_N/checkpoint_*.pth``.
Preprocessing, sliding windows, test-time mirroring and the resampling of the
probabilities back to the input grid are nnunetv2's own: the CT goes in as HU on
its own grid with its spacing, and the segmentation comes back on that grid.
Foreground is every label other than background.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence

import numpy as np
import torch

from pipeline.dicom.volume import CtVolume
from pipeline.errors import ModelError
from pipeline.models.base import Prediction


def _available_folds(folder: str, checkpoint: str) -> list[int | str]:
    folds: list[int | str] = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("fold_") and os.path.isfile(os.path.join(folder, name, checkpoint)):
            suffix = name[len("fold_") :]
            folds.append(int(suffix) if suffix.isdigit() else suffix)
    return folds


class NnUNetModel:
    """A loaded nnU-Net v2 results folder; one predictor shared by the threads of a process."""

    def __init__(
        self,
        folder: str,
        *,
        device: torch.device,
        folds: Sequence[int | str] | None = None,
        checkpoint: str = "checkpoint_final.pth",
        step_size: float = 0.5,
        tta: bool = True,
    ):
        for required in ("dataset.json", "plans.json"):
            if not os.path.isfile(os.path.join(folder, required)):
                raise ModelError(f"nnU-Net folder {folder} has no {required}")
        available = _available_folds(folder, checkpoint)
        chosen = list(folds) if folds else available
        missing = [f for f in chosen if f not in available]
        if not chosen or missing:
            raise ModelError(
                f"nnU-Net folder {folder}: folds {missing or chosen} have no {checkpoint} "
                f"(available: {available})"
            )
        with open(os.path.join(folder, "dataset.json"), encoding="utf-8") as f:
            dataset = json.load(f)
        with open(os.path.join(folder, "plans.json"), encoding="utf-8") as f:
            plans = json.load(f)
        self.name = f"nnunet:{plans.get('dataset_name', os.path.basename(os.path.normpath(folder)))}"
        self.version = (
            f"{os.path.basename(os.path.normpath(folder))} folds {','.join(map(str, chosen))} {checkpoint}"
        )
        self.n_channels = len(dataset.get("channel_names", dataset.get("modality", {"0": "CT"})))
        if self.n_channels != 1:
            raise ModelError(f"nnU-Net model {folder} expects {self.n_channels} input channels; CT gives 1")
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        self._predictor = nnUNetPredictor(
            tile_step_size=step_size,
            use_gaussian=True,
            use_mirroring=tta,
            perform_everything_on_device=device.type == "cuda",
            device=device,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        try:
            self._predictor.initialize_from_trained_model_folder(
                folder, use_folds=tuple(chosen), checkpoint_name=checkpoint
            )
        except Exception as exc:
            raise ModelError(
                f"nnU-Net folder {folder} cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        self._lock = threading.Lock()

    def predict(self, ct: CtVolume) -> Prediction:
        start = time.perf_counter()
        image = ct.hu.astype(np.float32)[None]  # (channel, z, y, x), nnU-Net's SimpleITK order
        properties = {"spacing": [float(v) for v in ct.geometry.spacing_mm[::-1]]}
        with self._lock:
            segmentation = self._predictor.predict_single_npy_array(image, properties, None, None, False)
        inference_s = time.perf_counter() - start
        start = time.perf_counter()
        mask = np.asarray(segmentation) > 0
        if mask.shape != ct.hu.shape:
            raise ModelError(
                f"nnU-Net returned shape {mask.shape} for a CT of shape {ct.hu.shape}",
                series_uid=ct.series_uid,
            )
        return Prediction(mask=mask, inference_s=inference_s, postprocess_s=time.perf_counter() - start)

"""nnU-Net v2 trained model folders (as the LNQ2023 teams published them), through nnunetv2's predictor.

The folder holds ``dataset.json``, ``plans.json`` and ``fold_N/checkpoint_*.pth``.
Preprocessing, sliding windows, test-time mirroring and the resampling of the
probabilities back to the input grid are nnunetv2's own: the CT goes in as HU on
its own grid with its spacing, and the segmentation comes back on that grid.
Foreground is every label other than background.

A network only works on arrays laid out as in training, which is how the image reader
named in ``plans.json`` (``image_reader_writer``) presented its training images. The CT is
handed over as that reader would present it saved as a file: ``SimpleITKIO`` gives
SimpleITK's array ``(z, y, x)`` with spacing ``(z, y, x)``, and ``NibabelIO`` the same (it
transposes nibabel's ``(x, y, z)`` to that order); ``NibabelIOWithReorient`` and
``SimpleITKIOWithReorient`` first turn the volume to the RAS axes nearest its own. The
segmentation is turned back onto the CT's own axes. Other readers (2-D images, TIFF) are refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from pipeline.enums import NNUNET_CHECKPOINT, NNUNET_STEP_SIZE
from pipeline.errors import ModelError
from pipeline.geometry import CtVolume, Geometry
from pipeline.models.base import ForwardLock, Prediction, check_finite, model_grid_shape
from pipeline.models.nnunet_loading import initialize_predictor

# The axes each nnU-Net image reader gives a volume, as a DICOM orientation code to turn the CT
# to before prediction (None: the CT's own axes, SimpleITK's array order).
READER_ORIENTATION: dict[str, str | None] = {
    "SimpleITKIO": None,
    "NibabelIO": None,
    "NibabelIOWithReorient": "RAS",
    "SimpleITKIOWithReorient": "RAS",
}


def reader_orientation(plans: dict, folder: str) -> str | None:
    """The orientation code for the reader ``plans.json`` names; a ModelError for any other."""
    reader = plans.get("image_reader_writer")
    if reader not in READER_ORIENTATION:
        raise ModelError(
            f"nnU-Net folder {folder}: plans.json image_reader_writer {reader!r} is not a reader of CT "
            f"volumes this pipeline can reproduce (supported: {', '.join(READER_ORIENTATION)})"
        )
    return READER_ORIENTATION[reader]


def reader_view(
    ct: CtVolume, orientation: str | None
) -> tuple[np.ndarray, list[float], Callable[[np.ndarray], np.ndarray]]:
    """The CT as the reader presents it: the ``(1, z, y, x)`` float32 array, its ``(z, y, x)``
    spacing, and a function taking a ``(z, y, x)`` array on those axes back to the CT's."""
    if orientation is None:
        spacing = [float(v) for v in ct.geometry.spacing_mm[::-1]]
        return ct.hu.astype(np.float32)[None], spacing, lambda array: array
    image = ct.to_sitk()
    own = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection())
    turned = sitk.DICOMOrient(image, orientation)

    def back(array: np.ndarray) -> np.ndarray:
        on_turned = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8))
        on_turned.CopyInformation(turned)
        restored = sitk.DICOMOrient(on_turned, own)
        if not Geometry.from_sitk(restored).same_grid(ct.geometry):
            raise ModelError(
                f"the {orientation} view of the CT does not map back onto its grid", series_uid=ct.series_uid
            )
        return sitk.GetArrayFromImage(restored)

    array = sitk.GetArrayFromImage(turned).astype(np.float32)[None]
    return array, [float(v) for v in turned.GetSpacing()[::-1]], back


class NnUNetModel:
    """A loaded nnU-Net v2 results folder; one predictor shared by the threads of a process."""

    def __init__(
        self,
        folder: str,
        *,
        device: torch.device,
        folds: Sequence[int | str] | None = None,
        checkpoint: str = NNUNET_CHECKPOINT,
        step_size: float = NNUNET_STEP_SIZE,
        tta: bool = True,
        trust_code: bool = False,
    ):
        for required in ("dataset.json", "plans.json"):
            if not os.path.isfile(os.path.join(folder, required)):
                raise ModelError(f"nnU-Net folder {folder} has no {required}")
        from nnunetv2.configuration import default_num_processes
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints what it finds
                available = nnUNetPredictor.auto_detect_available_folds(folder, checkpoint)
        except ValueError as exc:  # a fold_<not a number> folder
            raise ModelError(f"nnU-Net folder {folder}: unreadable fold folder name ({exc})") from exc
        chosen = list(folds) if folds else available
        missing = [f for f in chosen if not os.path.isfile(os.path.join(folder, f"fold_{f}", checkpoint))]
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
        self.orientation = reader_orientation(plans, folder)
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
        try:  # the checkpoints' pickles never run code unless the user trusts them (nnunet_loading)
            initialize_predictor(self._predictor, folder, chosen, checkpoint, trust_code=trust_code)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"nnU-Net folder {folder} cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        self.forward_lock: ForwardLock = threading.Lock()
        """One series' sliding windows at a time (the model host counts the time a series waits
        for it, which is not that series' own)."""
        # The windows and the resampling back both set torch's (process-wide) thread count and
        # restore it after; unlocked, they interleave, so both must set the windows' own value.
        self._threads = min(default_num_processes, torch.get_num_threads())

    def predict(self, ct: CtVolume, *, save_to: str | None = None) -> Prediction:
        """A mask on the CT's grid (nnU-Net resamples back itself); ``save_to`` is not used."""
        start = time.perf_counter()
        image, spacing_zyx, back = reader_view(ct, self.orientation)
        # a plan whose grid would not fit is refused before nnU-Net allocates it (the reader's axes)
        model_grid_shape(
            image.shape[1:],
            spacing_zyx,
            self._predictor.configuration_manager.spacing,
            series_uid=ct.series_uid or None,
        )
        segmentation = self._predict_array(image, spacing_zyx, series_uid=ct.series_uid or None)
        inference_s = time.perf_counter() - start
        start = time.perf_counter()
        mask = back(np.asarray(segmentation) > 0).astype(bool, copy=False)
        if mask.shape != ct.hu.shape:
            raise ModelError(
                f"nnU-Net returned shape {mask.shape} for a CT of shape {ct.hu.shape}",
                series_uid=ct.series_uid,
            )
        return Prediction(mask=mask, inference_s=inference_s, postprocess_s=time.perf_counter() - start)

    def _predict_array(
        self, image: np.ndarray, spacing_zyx: list[float], *, series_uid: str | None = None
    ) -> np.ndarray:
        """nnunetv2's ``predict_single_npy_array``, its three steps called as it calls them, with
        only the sliding windows under the lock: they load each fold's weights into the one
        network, while preprocessing and the resampling back are pure CPU work of the plans
        (seconds per series), which one series does while another's windows hold the GPU."""
        from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape,
        )

        predictor = self._predictor
        preprocessed = next(
            PreprocessAdapterFromNpy(
                [image],
                [None],
                [{"spacing": spacing_zyx}],
                [None],
                predictor.plans_manager,
                predictor.dataset_json,
                predictor.configuration_manager,
                num_threads_in_multithreaded=1,
                verbose=False,
            )
        )
        try:
            with self.forward_lock:
                logits = predictor.predict_logits_from_preprocessed_data(preprocessed["data"]).cpu()
        except RuntimeError as exc:  # nnunetv2 checks for infinities itself (not for NaN)
            if "Encountered inf" not in str(exc):
                raise
            raise ModelError(
                "the model returned non-finite logits: infinite values from nnU-Net's sliding windows",
                series_uid=series_uid,
            ) from exc
        check_finite(logits, what="logits", series_uid=series_uid, where="from nnU-Net's sliding windows")
        return convert_predicted_logits_to_segmentation_with_correct_shape(
            logits,
            predictor.plans_manager,
            predictor.configuration_manager,
            predictor.label_manager,
            preprocessed["data_properties"],
            return_probabilities=False,
            num_threads_torch=self._threads,
        )

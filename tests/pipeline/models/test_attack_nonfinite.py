"""Attacks: models that answer NaN or infinity. Each is an ``inference`` error naming the series,
never an ``ok`` series with no nodes (a NaN thresholds to background) or a blended mess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.dicom.ct import decode_ct_series
from pipeline.errors import ModelError
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.geometry import CtVolume
from pipeline.models.base import Prediction, check_finite
from pipeline.models.spec import parse_model_spec
from pipeline.models.torchscript import TorchScriptModel
from pipeline.outputs.rows import outcome_rows
from pipeline.process import ProcessConfig, process_series
from tests.support.cohort import cohort_row
from tests.support.models import save_torchscript
from tests.support.phantoms import make_phantom

CPU = torch.device("cpu")


class Poisoned(torch.nn.Module):
    """Logits of a HU window (nodes at 40 HU), with ``bad`` put where ``where`` says:
    ``all`` (every voxel), ``nodes`` (only voxels of node tissue, so only some windows), or
    ``corner`` (one voxel of every window). ``overflow`` multiplies the logits into infinity."""

    def __init__(self, bad: float, where: str, channels: int = 1):
        super().__init__()
        self.bad, self.where, self.channels = bad, where, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = 4.0 * (70.0 - torch.abs(x - 40.0))
        if self.where == "overflow":
            logits = logits * 1e30 * 1e30
        elif self.where == "all":
            logits = torch.full_like(logits, self.bad)
        elif self.where == "nodes":
            logits = torch.where(x > 0.0, torch.full_like(logits, self.bad), logits)
        else:
            corner = torch.zeros_like(logits, dtype=torch.bool)
            corner[:, :, 0, 0, 0] = True
            logits = torch.where(corner, torch.full_like(logits, self.bad), logits)
        if self.channels == 1:
            return logits
        return torch.cat([torch.zeros_like(logits), logits], dim=1)  # softmax: the bad value in channel 1


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory):
    return make_phantom(tmp_path_factory.mktemp("clean"), seed=43, noise_sd=0.0, anatomy=False)


@pytest.fixture(scope="module")
def ct(clean) -> CtVolume:
    return decode_ct_series(str(clean.ct_dir))


POISONS = [
    (float("nan"), "all", 1),
    (float("nan"), "nodes", 1),
    (float("-inf"), "all", 1),  # sigmoid 0 everywhere: an empty prediction, were it not refused
    (float("inf"), "nodes", 1),  # sigmoid 1 exactly where the nodes are: hidden by the sigmoid
    (float("inf"), "corner", 1),
    (0.0, "overflow", 1),
    (float("nan"), "corner", 2),
    (float("-inf"), "nodes", 2),
]


@pytest.mark.parametrize(("bad", "where", "channels"), POISONS)
@pytest.mark.parametrize("to_file", [False, True])
def test_torchscript_non_finite_logits_are_refused(
    ct: CtVolume, tmp_path: Path, bad: float, where: str, channels: int, to_file: bool
) -> None:
    output = "sigmoid" if channels == 1 else "softmax"
    path = save_torchscript(
        Poisoned(bad, where, channels), tmp_path / "bad.pt", patch_size=(8, 48, 48), output=output
    )
    model = TorchScriptModel(str(path), device=CPU)
    save_to = tmp_path / "probabilities.npy" if to_file else None
    with pytest.raises(ModelError, match="non-finite logits") as caught:
        model.predict(ct, save_to=None if save_to is None else str(save_to))
    assert caught.value.series_uid == ct.series_uid and ct.series_uid in str(caught.value)
    assert list(tmp_path.glob("probabilities*")) == []  # no partial file left behind


def test_non_finite_output_is_an_inference_row_naming_the_series(clean, tmp_path: Path) -> None:
    path = save_torchscript(Poisoned(float("nan"), "nodes"), tmp_path / "nan.pt", patch_size=(8, 48, 48))
    config = ProcessConfig(
        fetch=FetchConfig(endpoint_url="http://127.0.0.1:9", attempts=1),
        model=parse_model_spec(f"torchscript:{path}", device="cpu"),
    )
    row = cohort_row(clean, ct_url=str(clean.ct_dir), seg_url=str(clean.seg_path))
    rows = outcome_rows(process_series(row, config=config, model=TorchScriptModel(str(path), device=CPU)))
    assert rows.series["status"] == "error" and rows.nodes == []
    ((stage, kind, message),) = [(e["stage"], e["error_type"], e["message"]) for e in rows.errors]
    assert (stage, kind) == ("inference", "ModelError")
    assert clean.series_uid in message and "NaN" in message


class _Handing:
    """A model of the protocol that hands back what it was given to hand back."""

    name, version = "handing", "0"

    def __init__(self, make) -> None:  # type: ignore[no-untyped-def]
        self.make = make

    def predict(self, ct: CtVolume, *, save_to: str | None = None) -> Prediction:
        return self.make(ct)


def _nan_mask(ct: CtVolume) -> Prediction:
    mask = np.zeros(ct.hu.shape, dtype=np.float32)
    mask[5, 5, 5] = np.nan  # np.asarray(..., dtype=bool) would call it foreground
    return Prediction(mask=mask, inference_s=0.0)


def _inf_probabilities(ct: CtVolume) -> Prediction:
    probabilities = np.zeros(ct.hu.shape, dtype=np.float32)
    probabilities[-1, -1, -1] = np.inf
    return Prediction(probabilities=probabilities, grid=ct.geometry, inference_s=0.0)


@pytest.mark.parametrize("make", [_nan_mask, _inf_probabilities])
def test_any_model_handing_back_non_finite_values_is_an_inference_error(clean, make) -> None:  # type: ignore[no-untyped-def]
    config = ProcessConfig(
        fetch=FetchConfig(endpoint_url="http://127.0.0.1:9", attempts=1),
        model=parse_model_spec("torchscript:/unused.pt", device="cpu"),
    )
    row = cohort_row(clean, ct_url=str(clean.ct_dir), seg_url=str(clean.seg_path))
    rows = outcome_rows(process_series(row, config=config, model=_Handing(make)))
    ((stage, kind, message),) = [(e["stage"], e["error_type"], e["message"]) for e in rows.errors]
    assert (stage, kind) == ("inference", "ModelError") and clean.series_uid in message
    assert "non-finite" in message


def test_check_finite_counts_and_bounds_its_copies() -> None:
    values = np.zeros((300, 100, 100), dtype=np.float32)  # 3 M values: checked in chunks
    check_finite(values, what="x", series_uid="1.2")
    values[299, 99, 99], values[0, 0, 0] = np.nan, -np.inf
    with pytest.raises(ModelError, match="1 NaN and 1 infinite of 3,000,000 values"):
        check_finite(values, what="x", series_uid="1.2")
    with pytest.raises(ModelError, match="1 NaN and 0 infinite"):
        check_finite(torch.tensor([0.0, float("nan")]), what="x", series_uid="1.2")
    check_finite(np.ones(3, dtype=bool), what="x", series_uid="1.2")  # a bool mask is always finite
    check_finite(np.float32(1.0) * np.ones(()), what="x", series_uid="1.2")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nnunet_non_finite_logits_are_refused(ct: CtVolume, tmp_path: Path, bad: float) -> None:
    """An nnU-Net checkpoint whose output layer's bias is NaN, or minus infinity on the foreground
    (nnU-Net's argmax would then call everything background)."""
    pytest.importorskip("nnunetv2")
    from pipeline.models.nnunet import NnUNetModel
    from tests.support.models import make_nnunet_folder

    folder = make_nnunet_folder(tmp_path / "Dataset999_LNQTiny", foreground_logit_offset=bad)
    model = NnUNetModel(str(folder), device=CPU, folds=(0,), tta=False, step_size=1.0)
    with pytest.raises(ModelError, match="non-finite logits") as caught:
        model.predict(ct)
    assert ct.series_uid in str(caught.value)

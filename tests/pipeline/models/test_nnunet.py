"""nnU-Net v2 results folders, loaded and run through nnunetv2's own predictor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.dicom.ct import decode_ct_series
from pipeline.models.base import ModelError
from pipeline.models.nnunet import NnUNetModel
from pipeline.models.spec import load_model, parse_model_spec
from tests.support.models import make_nnunet_folder

pytest.importorskip("nnunetv2", reason="nnunetv2 is the [nnunet] extra; make test installs it")


@pytest.fixture(scope="module")
def nnunet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nnunet_folder(tmp_path_factory.mktemp("nnunet") / "Dataset999_LNQTiny", folds=(0, 1))


def test_predicts_on_the_ct_grid(nnunet_folder: Path, phantom) -> None:
    model = load_model(parse_model_spec(f"nnunet:{nnunet_folder}", device="cpu", folds=(0,), tta=False))
    ct = decode_ct_series(str(phantom.ct_dir))
    prediction = model.predict(ct)
    assert prediction.mask.shape == ct.hu.shape and prediction.mask.dtype == bool
    assert prediction.seconds["inference"] > 0
    assert model.name == "nnunet:Dataset999_LNQTiny"
    assert "folds 0" in model.version


def test_ensemble_of_folds_with_mirroring(nnunet_folder: Path, phantom) -> None:
    model = NnUNetModel(str(nnunet_folder), device=torch.device("cpu"), folds=None, tta=True, step_size=1.0)
    assert "folds 0,1" in model.version
    ct = decode_ct_series(str(phantom.ct_dir))
    assert model.predict(ct).mask.shape == ct.hu.shape


def test_folder_rejections(nnunet_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="has no dataset.json"):
        NnUNetModel(str(tmp_path), device=torch.device("cpu"))
    with pytest.raises(ModelError, match=r"folds \[3\] have no checkpoint_final.pth"):
        NnUNetModel(str(nnunet_folder), device=torch.device("cpu"), folds=(3,))
    with pytest.raises(ModelError, match="have no checkpoint_best.pth"):
        NnUNetModel(str(nnunet_folder), device=torch.device("cpu"), checkpoint="checkpoint_best.pth")

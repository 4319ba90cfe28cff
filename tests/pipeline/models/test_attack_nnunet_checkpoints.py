"""Attacks: nnU-Net model folders that carry code. A checkpoint's pickle, or a class named in
plans.json, must not run unless the user says they trust the model (``trust_code``); a real
checkpoint that nnunetv2's own trainer wrote loads without that trust."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import ModelError
from pipeline.geometry import CtVolume, Geometry
from pipeline.models.nnunet_loading import SAFE_GLOBALS, TRUST_OPTION, load_checkpoint
from pipeline.models.spec import load_model, parse_model_spec
from tests.support.models import make_nnunet_folder

pytest.importorskip("nnunetv2", reason="nnunetv2 is the [nnunet] extra; make test installs it")

CPU = torch.device("cpu")


class Payload:
    """Pickled as a call of ``os.makedirs(marker)``: unpickling it creates the folder."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.makedirs, (self.marker,))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nnunet_folder(tmp_path_factory.mktemp("nnunet") / "Dataset999_LNQTiny")


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def _poisoned(folder: Path, to: Path, marker: Path, *, where: str) -> Path:
    """A copy of ``folder`` whose checkpoint carries the payload ``where`` (in the log, beside the
    weights, or as the whole file), keeping everything inference reads."""
    copy = _copy(folder, to)
    path = copy / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    if where == "log":
        checkpoint["logging"] = {"mean_fg_dice": [Payload(marker)]}
    elif where == "weights":
        checkpoint["network_weights"]["__payload__"] = Payload(marker)
    else:
        checkpoint = Payload(marker)
    torch.save(checkpoint, path)
    return copy


@pytest.mark.parametrize("where", ["log", "weights", "whole"])
def test_a_pickle_payload_does_not_run_and_the_model_is_refused(
    folder: Path, tmp_path: Path, where: str
) -> None:
    marker = tmp_path / "pwned"
    poisoned = _poisoned(folder, tmp_path / "model", marker, where=where)
    spec = parse_model_spec(f"nnunet:{poisoned}", device="cpu", folds=(0,), tta=False)
    with pytest.raises(ModelError, match=rf"needs (posix|os)\.makedirs.*{TRUST_OPTION}") as caught:
        load_model(spec)
    assert not marker.exists()
    assert str(poisoned / "fold_0" / "checkpoint_final.pth") in str(caught.value)


def test_trusting_the_model_runs_its_pickle_as_nnunetv2_would(folder: Path, tmp_path: Path) -> None:
    """The option means what it says: the payload runs (the attack above was a real one)."""
    marker = tmp_path / "pwned"
    poisoned = _poisoned(folder, tmp_path / "model", marker, where="log")
    load_model(parse_model_spec(f"nnunet:{poisoned}", device="cpu", folds=(0,), tta=False, trust_code=True))
    assert marker.is_dir()


def test_the_loader_names_no_global_beyond_the_allowlist(folder: Path) -> None:
    """Plain ``weights_only`` loading of the test checkpoint works without extra globals; the allowlist
    is numpy's scalar and dtypes and ``_codecs.encode``, nothing that calls out."""
    checkpoint = load_checkpoint(str(folder / "fold_0" / "checkpoint_final.pth"))
    assert set(checkpoint) >= {"network_weights", "trainer_name", "init_args"}
    names = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    assert names <= {
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray.scalar",
        "numpy.dtype",
        "numpy.dtypes.Float64DType",
        "numpy.dtypes.Float32DType",
        "_codecs.encode",
    }


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"network_class_name": "os.system"}, "network class 'os.system' is not one of nnU-Net's"),
        ({"network_class_name": "subprocess.Popen"}, "network class 'subprocess.Popen'"),
        ({"conv_op": "builtins.exec"}, "conv_op 'builtins.exec' is not a torch.nn layer"),
        ({"nonlin": "os.system"}, "nonlin 'os.system' is not a torch.nn layer"),
    ],
)
def test_plans_naming_other_code_are_refused(folder: Path, tmp_path: Path, edit: dict, message: str) -> None:
    copy = _copy(folder, tmp_path / "model")
    plans = json.loads((copy / "plans.json").read_text())
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    for key, value in edit.items():
        (architecture if key == "network_class_name" else architecture["arch_kwargs"])[key] = value
    (copy / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match=message):
        load_model(parse_model_spec(f"nnunet:{copy}", device="cpu", folds=(0,), tta=False))


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ([1, 2, 3], "holds a list, not a dict"),
        (
            {"trainer_name": "nnUNetTrainer", "init_args": {"configuration": "3d_fullres"}},
            "no network_weights",
        ),
        (
            {"network_weights": {"w": torch.zeros(1)}, "init_args": {"configuration": "3d_fullres"}},
            "trainer_name",
        ),
        (
            {
                "network_weights": {"w": torch.zeros(1)},
                "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres"},
                "inference_allowed_mirroring_axes": (0, 7),
            },
            "are not axes",
        ),
    ],
)
def test_a_checkpoint_of_the_wrong_shape_is_a_model_error(
    tmp_path: Path, checkpoint: object, message: str
) -> None:
    path = tmp_path / "checkpoint_final.pth"
    torch.save(checkpoint, path)
    with pytest.raises(ModelError, match=message):
        load_checkpoint(str(path))


def test_a_file_that_is_not_a_checkpoint_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_final.pth"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match="cannot be read"):
        load_checkpoint(str(path))


def test_an_unknown_trainer_is_a_model_error(folder: Path, tmp_path: Path) -> None:
    copy = _copy(folder, tmp_path / "model")
    path = copy / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["trainer_name"] = "NoSuchTrainer"
    torch.save(checkpoint, path)
    # nnunetv2 imports every trainer module looking for it: one that fails to import ends the search
    with pytest.raises(ModelError, match="trainer 'NoSuchTrainer' is not one nnunetv2 has|cannot be loaded"):
        load_model(parse_model_spec(f"nnunet:{copy}", device="cpu", folds=(0,), tta=False))


# ---- a checkpoint nnunetv2's own trainer wrote ------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nnunetv2 plans, preprocesses and trains a few iterations on tiny volumes (about 30 s)."""
    from tests.support.nnunet_checkpoint import trained_model_folder

    return trained_model_folder(tmp_path_factory.mktemp("trained"))


@pytest.mark.slow
def test_a_checkpoint_nnunetv2_trained_loads_without_trust_and_predicts(trained: Path) -> None:
    path = trained / "fold_all" / "checkpoint_final.pth"
    with pytest.raises(Exception, match="Weights only load failed"):  # numpy scalars in its log
        torch.load(path, weights_only=True)
    checkpoint = load_checkpoint(str(path))
    assert {"optimizer_state", "logging", "_best_ema", "grad_scaler_state"} <= set(checkpoint)
    assert isinstance(checkpoint["_best_ema"], np.floating)  # what needs the numpy globals
    model = load_model(parse_model_spec(f"nnunet:{trained}", device="cpu", folds=("all",), tta=False))
    hu = np.full((16, 32, 32), -100, dtype=np.int16)
    hu[5:11, 10:18, 12:20] = 40
    ct = CtVolume(
        hu=hu,
        geometry=Geometry((16, 32, 32), (0.0, 0.0, 0.0), (1.6, 1.6, 2.5), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
        series_uid="1.2.3",
        study_uid="1.2",
        frame_of_reference_uid="1.2.4",
        patient_id="p",
        sop_instance_uids=tuple(f"1.2.5.{i}" for i in range(16)),
    )
    prediction = model.predict(ct)
    assert prediction.mask is not None and prediction.mask.shape == hu.shape
    trusted = load_model(
        parse_model_spec(f"nnunet:{trained}", device="cpu", folds=("all",), tta=False, trust_code=True)
    )
    np.testing.assert_array_equal(trusted.predict(ct).mask, prediction.mask)  # the same network either way

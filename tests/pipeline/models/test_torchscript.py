"""TorchScript models: sidecar contract, sliding windows, grids, and one load per process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from pipeline.dicom.ct import decode_ct_series
from pipeline.enums import ModelKind
from pipeline.evaluate.lnq2023 import score_case
from pipeline.geometry import mask_to_sitk
from pipeline.measure.nodes import measure_nodes
from pipeline.models.base import ModelError, probabilities_to_ct_grid
from pipeline.models.spec import ModelSpec, load_model, parse_model_spec, resolve_device
from pipeline.models.torchscript import TorchScriptModel
from tests.support.models import HuWindow, save_torchscript
from tests.support.phantoms import make_phantom

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clean_phantom(tmp_path_factory: pytest.TempPathFactory):
    """Noise-free nodes (40 HU) in fat (-100 HU): a HU window finds exactly the nodes."""
    return make_phantom(tmp_path_factory.mktemp("clean"), seed=31, noise_sd=0.0, anatomy=False)


def _window(tmp: Path, **kw) -> Path:
    """Foreground above -30 HU (half-way from fat to node), so resampled borders stay put."""
    channels = 2 if kw.get("output") == "softmax" else 1
    return save_torchscript(HuWindow(40.0, 70.0, channels=channels), tmp / "window.pt", **kw)


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_on_the_ct_grid_the_prediction_is_exact(clean_phantom, tmp_path: Path, output: str) -> None:
    model = TorchScriptModel(str(_window(tmp_path, output=output, patch_size=(8, 40, 40))), device=CPU)
    ct = decode_ct_series(str(clean_phantom.ct_dir))
    prediction = model.predict(ct)
    np.testing.assert_array_equal(prediction.on_ct_grid(ct.geometry), clean_phantom.mask)
    assert prediction.inference_s > 0 and prediction.postprocess_s >= 0


def _centroid_errors(mask: np.ndarray, phantom, ct) -> list[float]:
    nodes = measure_nodes(mask, ct.geometry)
    return [
        min(np.linalg.norm(np.array(n.centroid_mm) - np.array(e.center_mm)) for e in phantom.nodes)
        for n in nodes
    ]


def test_model_spacing_round_trip_lines_up(clean_phantom, tmp_path: Path) -> None:
    """Resampled to 3 x 2 x 2 mm and back: the nodes stay where they are."""
    model = TorchScriptModel(
        str(_window(tmp_path, spacing_mm=[3.0, 2.0, 2.0], patch_size=(8, 32, 32))), device=CPU
    )
    ct = decode_ct_series(str(clean_phantom.ct_dir))
    mask = model.predict(ct).on_ct_grid(ct.geometry)
    assert mask.shape == ct.hu.shape
    score = score_case(mask_to_sitk(mask, ct.geometry), mask_to_sitk(clean_phantom.mask, ct.geometry))
    assert score.dsc > 0.8 and score.assd_mm < 1.5
    assert len(measure_nodes(mask, ct.geometry)) == 3
    assert max(_centroid_errors(mask, clean_phantom, ct)) < 1.0


def test_flipped_orientation_still_lines_up(clean_phantom, tmp_path: Path) -> None:
    """x running to patient right: resampling must follow the direction cosines."""
    import shutil

    ct_dir = tmp_path / "ct"
    shutil.copytree(clean_phantom.ct_dir, ct_dir)
    for path in ct_dir.iterdir():
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]
        ds.save_as(path)
    model = TorchScriptModel(
        str(_window(tmp_path, spacing_mm=[3.0, 2.0, 2.0], patch_size=(8, 32, 32))), device=CPU
    )
    ct = decode_ct_series(str(ct_dir))
    mask = model.predict(ct).on_ct_grid(ct.geometry)
    score = score_case(mask_to_sitk(mask, ct.geometry), mask_to_sitk(clean_phantom.mask, ct.geometry))
    assert score.dsc > 0.8


def test_probabilities_resampled_linearly_then_thresholded() -> None:
    from pipeline.geometry import Geometry

    identity = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    coarse = Geometry((1, 1, 2), (0.0, 0.0, 0.0), (2.0, 1.0, 1.0), identity)
    fine = Geometry((1, 1, 5), (0.0, 0.0, 0.0), (0.5, 1.0, 1.0), identity)
    probabilities = np.array([[[0.0, 1.0]]], dtype=np.float32)  # voxel centres at x = 0 and x = 2
    # linear: 0, .25, .5, .75, 1 at x = 0, .5, 1, 1.5, 2; foreground strictly above 0.5
    np.testing.assert_array_equal(
        probabilities_to_ct_grid(probabilities, coarse, fine)[0, 0], [False, False, False, True, True]
    )


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ({"version": "1", "patch_size": [8, 8, 8]}, "lacks \\['name'\\]"),
        ({"name": "m", "version": "1", "patch_size": [8, 8]}, "patch_size"),
        ({"name": "m", "version": "1", "patch_size": [8, 8, 8], "spacing_mm": [1, 1]}, "spacing_mm"),
        ({"name": "m", "version": "1", "patch_size": [8, 8, 8], "overlap": 1.0}, "overlap"),
        ({"name": "m", "version": "1", "patch_size": [8, 8, 8], "output": "logits"}, "output"),
        # a window step below one voxel: MONAI would place the windows one voxel apart
        (
            {"name": "m", "version": "1", "patch_size": [8, 48, 48], "overlap": 0.9},
            "0.8 voxels, less than one",
        ),
        ({"name": "m", "version": "1", "patch_size": [1, 2, 64], "overlap": 0.6}, "at most 0.5"),
        ({"name": "m", "version": "1", "patch_size": [8, 8, 8], "overlap": 0.999999}, "less than one"),
        ({"name": "m", "version": "1", "patch_size": [8, 8, 8], "overlap": float("nan")}, "not a number"),
        ({"name": "m", "version": "1", "patch_size": [8, 8, 8], "overlap": "0.5"}, "not a number"),
        ({"name": "m", "version": "1", "patch_size": [8, 8, 8], "overlap": True}, "not a number"),
        ({"name": "m", "version": "1", "patch_size": [True, 8, 8]}, "patch_size"),
        ({"name": "m", "version": "1", "patch_size": [8, 8, 8], "spacing_mm": [None, 1, 1]}, "spacing_mm"),
        ({"name": "m", "version": "1", "patch_size": [8, 8, 8], "spacing_mm": ["1", 1, 1]}, "spacing_mm"),
        (["name", "version", "patch_size"], "not a JSON object"),
    ],
)
def test_sidecar_rejections(tmp_path: Path, sidecar: dict, message: str) -> None:
    path = _window(tmp_path)
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match=message):
        TorchScriptModel(str(path), device=CPU)


@pytest.mark.parametrize(("patch", "overlap"), [([8, 48, 48], 0.875), ([1, 48, 48], 0.5), ([1, 1, 1], 0.9)])
def test_a_step_of_at_least_one_voxel_loads(tmp_path: Path, patch: list, overlap: float) -> None:
    """A step of exactly one voxel is MONAI's own; a window one voxel deep moves by one anyway."""
    path = _window(tmp_path, patch_size=tuple(patch), overlap=overlap)
    assert TorchScriptModel(str(path), device=CPU).sidecar.overlap == overlap


def test_missing_model_or_sidecar(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        TorchScriptModel(str(tmp_path / "absent.pt"), device=CPU)
    path = _window(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="sidecar .* unreadable"):
        TorchScriptModel(str(path), device=CPU)


def test_wrong_channel_count_is_an_error(clean_phantom, tmp_path: Path) -> None:
    path = save_torchscript(
        HuWindow(40.0, 2.5, channels=2), tmp_path / "two.pt", output="sigmoid", patch_size=(8, 40, 40)
    )
    ct = decode_ct_series(str(clean_phantom.ct_dir))
    with pytest.raises(ModelError, match="'sigmoid' output but returned 2 channels"):
        TorchScriptModel(str(path), device=CPU).predict(ct)


def test_spec_parsing_and_devices(tmp_path: Path) -> None:
    assert parse_model_spec("reference") is None  # the reference mode runs no model
    spec = parse_model_spec("nnunet:/models/lnq", folds=(0, 1), tta=False)
    assert spec is not None
    assert (spec.kind, spec.path, spec.folds, spec.label) == (
        ModelKind.NNUNET,
        "/models/lnq",
        (0, 1),
        "nnunet:/models/lnq",
    )
    for bad, message in (
        ("onnx:/m", "expected reference"),
        ("torchscript", "needs a path"),
        ("reference:/x", "takes no path"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_model_spec(bad)
    with pytest.raises(ValueError, match="device 'tpu' is not one of"):
        parse_model_spec("reference", device="tpu")
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ModelError, match="does not exist"):
        load_model(ModelSpec(kind=ModelKind.TORCHSCRIPT, path=str(tmp_path / "absent.pt")))


def test_a_prediction_holds_a_mask_or_probabilities_with_their_grid(tmp_path: Path) -> None:
    from pipeline.geometry import Geometry
    from pipeline.models.base import Prediction, SavedPrediction, probabilities_to_ct_grid

    source = Geometry(
        size_zyx=(6, 10, 12),
        origin_mm=(0.0, 0.0, 0.0),
        spacing_mm=(2.0, 2.0, 3.0),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    target = Geometry(
        size_zyx=(9, 20, 24),
        origin_mm=(-0.5, -0.5, -0.5),
        spacing_mm=(1.0, 1.0, 2.0),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    probabilities = np.random.default_rng(0).random(source.size_zyx, dtype=np.float32)
    with pytest.raises(ValueError):
        Prediction(inference_s=0.0)
    with pytest.raises(ValueError):
        Prediction(inference_s=0.0, probabilities=probabilities)  # no grid
    with pytest.raises(ValueError):
        Prediction(inference_s=0.0, mask=probabilities > 0.5, probabilities=probabilities, grid=source)
    predicted = Prediction(inference_s=0.0, probabilities=probabilities, grid=source, threshold=0.6)
    expected = probabilities_to_ct_grid(probabilities, source, target, threshold=0.6)
    np.testing.assert_array_equal(predicted.on_ct_grid(target), expected)
    saved = SavedPrediction.save(predicted, str(tmp_path / "p.npy"))
    assert saved.grid == source and saved.threshold == 0.6
    np.testing.assert_array_equal(saved.on_ct_grid(target), expected)  # the same after the file
    mask = SavedPrediction.save(Prediction(inference_s=0.0, mask=expected), str(tmp_path / "m.npy"))
    assert mask.grid is None
    np.testing.assert_array_equal(mask.on_ct_grid(target), expected)


def test_a_spacing_far_too_fine_is_refused_before_anything_is_allocated(
    clean_phantom, tmp_path: Path
) -> None:
    """A sidecar in micrometres (or a typo) would put the CT on a grid of billions of voxels in the
    worker that holds the model: a ModelError names the series and the grid instead."""
    path = save_torchscript(HuWindow(40.0, 70.0), tmp_path / "fine.pt", spacing_mm=[0.01, 0.01, 0.01])
    ct = decode_ct_series(str(clean_phantom.ct_dir))
    with pytest.raises(
        ModelError, match=r"would hold .* voxels, more than the 268,435,456 allowed"
    ) as caught:
        TorchScriptModel(str(path), device=CPU).predict(ct)
    assert caught.value.series_uid == ct.series_uid


def test_saved_as_it_goes_equals_in_memory_and_monai_on_the_whole_grid(
    clean_phantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``predict(ct, save_to=...)`` writes the probabilities band by band: the file holds what the
    in-memory prediction holds, which is the sigmoid of MONAI's whole-volume sliding window on the CT
    resampled whole; the file is not written a second time when saved for the measuring child."""
    from monai.inferers import sliding_window_inference

    from pipeline.models.base import SavedPrediction, model_grid
    from tests.support.grids import resampled_whole
    from tests.support.models import TinyConvNet

    torch.manual_seed(0)
    path = save_torchscript(
        TinyConvNet(), tmp_path / "tiny.pt", spacing_mm=[3.0, 1.7, 1.7], patch_size=(8, 32, 32), overlap=0.25
    )
    model = TorchScriptModel(str(path), device=CPU)
    ct = decode_ct_series(str(clean_phantom.ct_dir))
    in_memory = model.predict(ct)
    assert in_memory.saved_to is None
    target = str(tmp_path / "prediction.npy")
    streamed = model.predict(ct, save_to=target)
    assert streamed.saved_to == target and isinstance(streamed.probabilities, np.memmap)
    np.testing.assert_array_equal(np.load(target), in_memory.probabilities)

    grid = model_grid(ct, (3.0, 1.7, 1.7))
    assert in_memory.grid is not None and in_memory.grid.same_grid(grid)
    import SimpleITK as sitk

    whole = resampled_whole(ct.hu, ct.geometry, grid, sitk.sitkLinear, -1024.0)  # one sitk.Resample
    with torch.inference_mode():
        logits = sliding_window_inference(
            torch.from_numpy(whole)[None, None],
            roi_size=(8, 32, 32),
            sw_batch_size=1,
            predictor=model.module,
            overlap=0.25,
            mode="gaussian",
            padding_mode="constant",
            cval=-1024.0,
        )
    assert isinstance(logits, torch.Tensor)
    # the blended logits are MONAI's bit for bit (test_windows.py); the sigmoid, taken a band at a
    # time here and on the whole volume there, may round the last bit another way (vector tails)
    np.testing.assert_allclose(in_memory.probabilities, logits[0, 0].sigmoid().numpy(), rtol=0, atol=2e-7)

    def no_second_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the probabilities were written again")

    monkeypatch.setattr(np, "save", no_second_write)
    saved = SavedPrediction.save(streamed, target)
    assert saved.path == target and saved.grid is streamed.grid
    link = tmp_path / "link"
    link.symlink_to(tmp_path, target_is_directory=True)
    # the same file by another name: writing it would truncate it under its own mapping
    assert SavedPrediction.save(streamed, str(link / "prediction.npy")).grid is streamed.grid


def test_a_failed_prediction_leaves_no_partial_file(clean_phantom, tmp_path: Path) -> None:
    path = save_torchscript(HuWindow(40.0, 70.0, channels=2), tmp_path / "two.pt", patch_size=(8, 40, 40))
    model = TorchScriptModel(str(path), device=CPU)  # declares 'sigmoid', returns two channels
    ct = decode_ct_series(str(clean_phantom.ct_dir))
    target = tmp_path / "prediction.npy"
    with pytest.raises(ModelError, match="returned 2 channels") as caught:
        model.predict(ct, save_to=str(target))
    assert caught.value.series_uid == ct.series_uid and not target.exists()


@pytest.mark.gpu
@pytest.mark.parametrize("net", ["window", "tiny"])
def test_on_a_gpu_the_prediction_equals_the_cpu_prediction(clean_phantom, tmp_path: Path, net: str) -> None:
    """The same TorchScript file on ``cuda`` and on the CPU, resampled onto a model grid of its own:
    the same probabilities to float rounding (cuDNN's convolutions round differently), and for the
    HU window, which finds the nodes, the same mask; streamed to a file on the GPU too."""
    from tests.support.models import TinyConvNet

    torch.manual_seed(0)
    module = HuWindow(40.0, 70.0) if net == "window" else TinyConvNet()
    path = save_torchscript(
        module, tmp_path / f"{net}.pt", spacing_mm=[3.0, 1.7, 1.7], patch_size=(8, 32, 32), overlap=0.25
    )
    ct = decode_ct_series(str(clean_phantom.ct_dir))
    on_cpu = TorchScriptModel(str(path), device=CPU).predict(ct)
    on_gpu = TorchScriptModel(str(path), device=torch.device("cuda")).predict(
        ct, save_to=str(tmp_path / "gpu.npy")
    )
    assert on_gpu.grid is not None and on_cpu.grid is not None and on_gpu.grid.same_grid(on_cpu.grid)
    np.testing.assert_allclose(on_gpu.probabilities, on_cpu.probabilities, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.load(tmp_path / "gpu.npy"), on_gpu.probabilities)
    if net == "window":
        gpu_mask = on_gpu.on_ct_grid(ct.geometry)
        assert gpu_mask.any()
        np.testing.assert_array_equal(gpu_mask, on_cpu.on_ct_grid(ct.geometry))

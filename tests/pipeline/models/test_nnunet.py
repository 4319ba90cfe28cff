"""nnU-Net v2 results folders, loaded and run through nnunetv2's own predictor."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation

from pipeline.dicom.ct import decode_ct_series
from pipeline.errors import ModelError
from pipeline.geometry import CtVolume, Geometry
from pipeline.models.nnunet import READER_ORIENTATION, NnUNetModel, reader_view
from pipeline.models.spec import load_model, parse_model_spec
from tests.support.models import make_nnunet_folder

pytest.importorskip("nnunetv2", reason="nnunetv2 is the [nnunet] extra; make test installs it")
from nnunetv2.inference import data_iterators, export_prediction  # noqa: E402


@pytest.fixture(scope="module")
def nnunet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nnunet_folder(tmp_path_factory.mktemp("nnunet") / "Dataset999_LNQTiny", folds=(0, 1))


def with_reader(folder: Path, copy_to: Path, reader: str | None) -> Path:
    """A copy of an nnU-Net folder whose plans.json names another image reader (None: none)."""
    shutil.copytree(folder, copy_to)
    plans = json.loads((copy_to / "plans.json").read_text())
    plans.pop("image_reader_writer")
    if reader is not None:
        plans["image_reader_writer"] = reader
    (copy_to / "plans.json").write_text(json.dumps(plans))
    return copy_to


def oblique_ct(seed: int = 3) -> CtVolume:
    """A small CT whose axes are neither LPS nor RAS (rotated, slices running feet-ward)."""
    rng = np.random.default_rng(seed)
    direction = Rotation.from_euler("xyz", [170, 25, -100], degrees=True).as_matrix()
    hu = rng.integers(-1000, 1000, size=(6, 7, 8)).astype(np.int16)
    geometry = Geometry(
        size_zyx=(6, 7, 8),
        origin_mm=(-12.0, 30.5, 104.0),
        spacing_mm=(0.7, 0.8, 2.5),
        direction=tuple(float(v) for v in direction.flatten()),
    )
    return CtVolume(
        hu=hu,
        geometry=geometry,
        series_uid="1.2.3.4",
        study_uid="1.2.3",
        frame_of_reference_uid="1.2.3.5",
        patient_id="p",
        sop_instance_uids=tuple(f"1.2.3.4.{i}" for i in range(6)),
    )


@pytest.mark.parametrize("reader", sorted(READER_ORIENTATION))
def test_the_ct_goes_in_as_the_plans_reader_presents_it(reader: str, tmp_path: Path) -> None:
    """For every supported reader: what nnU-Net's own reader class gives for this CT saved as a
    NIfTI file (the training convention) is what the model is handed, and the way back is exact."""
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

    ct = oblique_ct()
    path = tmp_path / "ct_0000.nii.gz"
    sitk.WriteImage(ct.to_sitk(), str(path))
    expected, properties = recursive_find_reader_writer_by_name(reader)().read_images([str(path)])
    image, spacing_zyx, back = reader_view(ct, READER_ORIENTATION[reader])
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_allclose(spacing_zyx, properties["spacing"], rtol=1e-6)
    np.testing.assert_array_equal(back(image[0] > 0), ct.hu > 0)


@pytest.mark.parametrize("reader", ["SimpleITKIO", "NibabelIOWithReorient"])
def test_prediction_lands_on_the_ct_axes(reader: str, nnunet_folder: Path, tmp_path: Path) -> None:
    folder = with_reader(nnunet_folder, tmp_path / "model", reader)
    model = NnUNetModel(str(folder), device=torch.device("cpu"), folds=(0,), tta=False)
    calls = []

    def predict_array(image, spacing_zyx, series_uid=None):
        calls.append((image, spacing_zyx))
        return (image[0] > 100).astype(np.uint8) * 2  # any label other than background is a node

    model._predict_array = predict_array  # type: ignore[method-assign]
    ct = oblique_ct()
    prediction = model.predict(ct)
    np.testing.assert_array_equal(prediction.mask, ct.hu > 100)
    ((image, _),) = calls
    if READER_ORIENTATION[reader] is not None:
        assert image.shape[1:] != ct.hu.shape  # the RAS view of this CT permutes its axes


def test_the_three_steps_give_what_nnunetv2_gives(nnunet_folder: Path) -> None:
    """Preprocessing, windows and resampling back, called apart, equal ``predict_single_npy_array``
    (two folds: the weights are swapped in the network between windows)."""
    model = NnUNetModel(str(nnunet_folder), device=torch.device("cpu"), folds=(0, 1), tta=False)
    image, spacing_zyx, _ = reader_view(oblique_ct(), None)
    ours = model._predict_array(image, spacing_zyx)
    theirs = model._predictor.predict_single_npy_array(
        input_image=image,
        image_properties={"spacing": spacing_zyx},
        segmentation_previous_stage=None,
        output_file_truncated=None,
        save_or_return_probabilities=False,
    )
    assert ours.shape == image.shape[1:]
    np.testing.assert_array_equal(ours, theirs)
    assert 0 < np.count_nonzero(ours) < ours.size  # random weights, but not a constant answer


def test_only_the_windows_wait_for_the_model(nnunet_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A series preprocesses while another holds the model, and resamples back after releasing it."""
    model = NnUNetModel(str(nnunet_folder), device=torch.device("cpu"), folds=(0,), tta=False)
    events: list[str] = []

    class RecordingLock:
        def __init__(self) -> None:
            self.inner = threading.Lock()
            self.asked = threading.Event()

        def __enter__(self) -> None:
            events.append("asks for the model")
            self.asked.set()
            self.inner.acquire()

        def __exit__(self, *exc: object) -> None:
            events.append("releases the model")
            self.inner.release()

    lock = RecordingLock()
    model.forward_lock = lock  # type: ignore[assignment]
    windows = model._predictor.predict_logits_from_preprocessed_data

    def recorded_windows(data):
        events.append(f"windows on {tuple(data.shape)}")
        return windows(data)

    model._predictor.predict_logits_from_preprocessed_data = recorded_windows  # type: ignore[method-assign]
    for module, name, label in (
        (data_iterators, "PreprocessAdapterFromNpy", "preprocesses"),
        (export_prediction, "convert_predicted_logits_to_segmentation_with_correct_shape", "resamples back"),
    ):
        monkeypatch.setattr(module, name, recording(getattr(module, name), label, events))
    image, spacing_zyx, _ = reader_view(oblique_ct(), None)
    result: list[np.ndarray] = []
    lock.inner.acquire()  # another series holds the model
    worker = threading.Thread(target=lambda: result.append(model._predict_array(image, spacing_zyx)))
    worker.start()
    assert lock.asked.wait(60), "the series never asked for the model"
    assert events == ["preprocesses", "asks for the model"]
    lock.inner.release()
    worker.join(60)
    assert not worker.is_alive()
    assert events[2].startswith("windows on ") and events[3:] == ["releases the model", "resamples back"]
    assert result[0].shape == image.shape[1:]


def recording(function, label: str, events: list[str]):
    def wrapper(*args, **kwargs):
        events.append(label)
        return function(*args, **kwargs)

    return wrapper


def test_predicts_on_the_ct_grid(nnunet_folder: Path, phantom) -> None:
    model = load_model(parse_model_spec(f"nnunet:{nnunet_folder}", device="cpu", folds=(0,), tta=False))
    ct = decode_ct_series(str(phantom.ct_dir))
    prediction = model.predict(ct)
    assert prediction.mask.shape == ct.hu.shape and prediction.mask.dtype == bool
    assert prediction.inference_s > 0
    assert model.name == "nnunet:Dataset999_LNQTiny"
    assert "folds 0" in model.version


def test_reorienting_reader_runs_end_to_end(nnunet_folder: Path, tmp_path: Path) -> None:
    folder = with_reader(nnunet_folder, tmp_path / "model", "NibabelIOWithReorient")
    model = NnUNetModel(str(folder), device=torch.device("cpu"), folds=(0,), tta=False, step_size=1.0)
    ct = oblique_ct()
    prediction = model.predict(ct)
    assert prediction.mask.shape == ct.hu.shape and prediction.mask.dtype == bool


def test_ensemble_of_folds_with_mirroring(nnunet_folder: Path, phantom) -> None:
    model = NnUNetModel(str(nnunet_folder), device=torch.device("cpu"), folds=None, tta=True, step_size=1.0)
    assert "folds 0,1" in model.version
    ct = decode_ct_series(str(phantom.ct_dir))
    assert model.predict(ct).mask.shape == ct.hu.shape


def test_folds_are_found_as_nnunet_finds_them(nnunet_folder: Path, tmp_path: Path) -> None:
    """nnU-Net's own discovery: numbered folds with the checkpoint; fold_all only when asked for."""
    folder = tmp_path / "model"
    shutil.copytree(nnunet_folder, folder)
    shutil.copytree(folder / "fold_1", folder / "fold_all")
    (folder / "fold_5").mkdir()  # no checkpoint
    assert "folds 0,1 " in NnUNetModel(str(folder), device=torch.device("cpu")).version
    assert "folds all " in NnUNetModel(str(folder), device=torch.device("cpu"), folds=("all",)).version
    with pytest.raises(ModelError, match=r"folds \[5\] have no checkpoint_final.pth \(available: \[0, 1\]\)"):
        NnUNetModel(str(folder), device=torch.device("cpu"), folds=(5,))


def test_folder_rejections(nnunet_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="has no dataset.json"):
        NnUNetModel(str(tmp_path), device=torch.device("cpu"))
    with pytest.raises(ModelError, match=r"folds \[3\] have no checkpoint_final.pth"):
        NnUNetModel(str(nnunet_folder), device=torch.device("cpu"), folds=(3,))
    with pytest.raises(ModelError, match="have no checkpoint_best.pth"):
        NnUNetModel(str(nnunet_folder), device=torch.device("cpu"), checkpoint="checkpoint_best.pth")


@pytest.mark.parametrize("reader", ["Tiff3DIO", "NaturalImage2DIO", "MyOwnIO", None])
def test_a_reader_of_unknown_axes_is_refused(reader: str | None, nnunet_folder: Path, tmp_path: Path) -> None:
    folder = with_reader(nnunet_folder, tmp_path / "model", reader)
    with pytest.raises(ModelError, match=rf"image_reader_writer {reader!r} is not a reader of CT volumes"):
        NnUNetModel(str(folder), device=torch.device("cpu"), folds=(0,))


def test_the_unlocked_resampling_sets_no_more_torch_threads_than_the_windows(
    nnunet_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's thread count is process-wide, set and restored by both steps: outside the lock the
    resampling back must ask for the count the windows use, or two series could leave the process
    with nnU-Net's default (8) on a smaller machine."""
    original = torch.get_num_threads()
    torch.set_num_threads(max(1, min(2, original)))
    before = torch.get_num_threads()
    model = NnUNetModel(str(nnunet_folder), device=torch.device("cpu"), folds=(0,), tta=False)
    asked = []
    convert = export_prediction.convert_predicted_logits_to_segmentation_with_correct_shape

    def recorded(*args, **kwargs):
        asked.append(kwargs.get("num_threads_torch"))
        return convert(*args, **kwargs)

    monkeypatch.setattr(
        export_prediction, "convert_predicted_logits_to_segmentation_with_correct_shape", recorded
    )
    image, spacing_zyx, _ = reader_view(oblique_ct(), None)
    workers = [threading.Thread(target=model._predict_array, args=(image, spacing_zyx)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    try:
        assert asked == [before, before]
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(original)


def test_a_plan_whose_grid_would_not_fit_is_refused(tmp_path: Path) -> None:
    folder = make_nnunet_folder(tmp_path / "Dataset997_Fine", spacing_zyx=(0.005, 0.005, 0.005))
    model = NnUNetModel(str(folder), device=torch.device("cpu"), folds=(0,), tta=False)
    ct = oblique_ct()
    with pytest.raises(ModelError, match="allowed per series; is the model's spacing in millimetres"):
        model.predict(ct)

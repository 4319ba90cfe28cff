"""One series end to end, without Beam: rows for every outcome."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline.fetch.s5cmd import FetchConfig
from pipeline.geometry import Geometry
from pipeline.measure.nodes import measure_nodes
from pipeline.outputs.rows import OutcomeRows, outcome_rows
from pipeline.process import ProcessConfig
from pipeline.process import process_series as _process_series
from tests.support.cohort import cohort_row
from tests.support.phantoms import make_phantom


def process_series(row: dict, **kwargs: object) -> OutcomeRows:
    """The outcome's table rows (each checked against its schema by ``outcome_rows``)."""
    return outcome_rows(_process_series(row, **kwargs))  # type: ignore[arg-type]


def _config(endpoint: str = "http://127.0.0.1:9") -> ProcessConfig:
    return ProcessConfig(fetch=FetchConfig(endpoint_url=endpoint, attempts=1, backoff_s=0.0))


def test_reference_nodes_from_s3(phantom, upload_series, s3_endpoint: str) -> None:
    row = cohort_row(phantom, ct_url=upload_series(phantom.ct_dir), seg_url=upload_series(phantom.seg_path))
    result = process_series(row, config=_config(s3_endpoint))
    assert result.errors == []
    s = result.series
    assert s["status"] == "ok" and s["n_slices"] == 40
    geometry = Geometry((40, 128, 128), phantom.origin_mm, phantom.spacing_mm, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    expected = measure_nodes(phantom.mask, geometry)
    assert s["n_reference_nodes"] == len(phantom.nodes) == len(expected) == 3
    assert s["reference_volume_ml"] == pytest.approx(phantom.mask.sum() * np.prod(phantom.spacing_mm) / 1000)
    for stage in ("fetch_s", "decode_s", "reference_s", "measure_s", "total_s"):
        assert s[stage] is not None and s[stage] >= 0
    nodes = result.nodes
    assert [n["voxel_count"] for n in nodes] == [e.voxel_count for e in expected]
    assert {n["source"] for n in nodes} == {"reference"}
    # every node's centroid lies near the centre of one of the ellipsoids that made it
    for n in nodes:
        centre = np.array([n["centroid_x_mm"], n["centroid_y_mm"], n["centroid_z_mm"]])
        distances = [np.linalg.norm(centre - np.array(e.center_mm)) for e in phantom.nodes]
        assert min(distances) < 1.0


def test_local_paths_work_without_s3(phantom) -> None:
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    result = process_series(row, config=_config())
    assert result.series["status"] == "ok" and result.series["n_reference_nodes"] == 3


@pytest.mark.parametrize(
    ("change", "stage", "error_type", "message"),
    [
        ({"ct_series_instance_uid": "../evil"}, "cohort", "CohortError", "not a DICOM UID"),
        ({"ct_series_url": "/nowhere/at/all"}, "fetch", "FetchError", "does not exist"),
        ({"ct_instance_count": 41}, "fetch", "FetchError", "expected 41"),
        ({"ct_series_instance_uid": "1.2.3.4"}, "decode", "DecodeError", "expected '1.2.3.4'"),
        ({"seg_series_url": None}, "reference", "ReferenceSegError", "no reference SEG"),
    ],
)
def test_failures_become_rows_naming_the_series(
    phantom, change: dict, stage: str, error_type: str, message: str
) -> None:
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path), **change)
    result = process_series(row, config=_config())
    series = result.series
    assert series["status"] == "error"
    assert series["ct_series_instance_uid"] == row["ct_series_instance_uid"]
    assert result.nodes == []
    (error,) = result.errors
    assert (error["stage"], error["error_type"]) == (stage, error_type)
    assert message in error["message"]
    assert row["ct_series_instance_uid"] in error["message"]


def test_seg_of_another_series_is_a_reference_error(phantom, tmp_path: Path) -> None:
    other = make_phantom(tmp_path / "other", seed=77)
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(other.seg_path))
    result = process_series(row, config=_config())
    assert result.series["status"] == "error"
    assert result.errors[0]["stage"] == "reference"
    assert "not the CT series" in result.errors[0]["message"]


def test_unexpected_exception_is_caught_with_its_stage(phantom, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.series_stages as stages

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(stages, "measure_labelled", broken)  # seen in this process: isolation off
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    result = process_series(row, config=dataclasses.replace(_config(), isolate=False))
    assert result.series["status"] == "error"
    assert result.errors[0]["stage"] == "measure"
    assert result.errors[0]["error_type"] == "ZeroDivisionError"


def test_temporary_folders_are_removed(phantom, upload_series, s3_endpoint: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    row = cohort_row(phantom, ct_url=upload_series(phantom.ct_dir), seg_url=upload_series(phantom.seg_path))
    config = ProcessConfig(fetch=FetchConfig(endpoint_url=s3_endpoint), work_dir=str(work))
    assert _process_series(row, config=config).errors == ()
    assert list(work.iterdir()) == []


# ---- model mode -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def window_model(tmp_path_factory: pytest.TempPathFactory):
    from pipeline.models.torchscript import TorchScriptModel
    from tests.support.models import HuWindow, save_torchscript

    path = save_torchscript(
        HuWindow(40.0, 70.0), tmp_path_factory.mktemp("m") / "window.pt", patch_size=(8, 48, 48)
    )
    import torch

    return path, TorchScriptModel(str(path), device=torch.device("cpu"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory):
    return make_phantom(tmp_path_factory.mktemp("clean"), seed=41, noise_sd=0.0, anatomy=False)


def _model_config(path) -> ProcessConfig:
    from pipeline.models.spec import parse_model_spec

    return ProcessConfig(
        fetch=FetchConfig(endpoint_url="http://127.0.0.1:9", attempts=1),
        model=parse_model_spec(f"torchscript:{path}", device="cpu"),
    )


class MemorySink:
    """Keeps what a series writes: (kind, uid) -> bytes."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], bytes] = {}

    def __call__(self, kind: str, uid: str, made: str) -> str:
        with open(made, "rb") as f:
            self.stored[(kind, uid)] = f.read()
        return f"results/{kind}/{uid}"


def test_model_mode_measures_scores_and_writes_seg(clean, window_model) -> None:
    path, model = window_model
    sink = MemorySink()
    row = cohort_row(clean, ct_url=str(clean.ct_dir), seg_url=str(clean.seg_path))
    result = process_series(row, config=_model_config(path), model=model, sink=sink)
    s = result.series
    assert s["status"] == "ok", result.errors
    # every series column is declared once and filled from the outcome (but those the publishing step
    # fills): none is forgotten
    from pipeline.outputs.schemas import PUBLISHED_SERIES_COLUMNS

    assert [name for name, value in s.items() if value is None] == list(PUBLISHED_SERIES_COLUMNS)
    assert all(value is not None for n in result.nodes for value in n.values())
    assert s["model"] == f"torchscript:{path}"
    assert s["seg_uri"] == f"results/seg/{clean.series_uid}" and ("seg", clean.series_uid) in sink.stored
    assert s["sr_uri"] == f"results/sr/{clean.series_uid}" and s["qc_uri"] == f"results/qc/{clean.series_uid}"
    assert sink.stored[("qc", clean.series_uid)].startswith(b"\x89PNG")
    assert s["dsc"] == pytest.approx(1.0) and s["assd_mm"] == pytest.approx(0.0, abs=1e-5)
    assert s["n_prediction_nodes"] == s["n_reference_nodes"] == 3
    assert s["prediction_spd_mm2"] == pytest.approx(s["reference_spd_mm2"])
    assert s["sensitivity_short_axis_ge_10mm"] == pytest.approx(1.0)
    assert s["false_positive_nodes"] == 0  # 'full' annotation
    for stage in ("inference_s", "postprocess_s", "seg_write_s", "score_s"):
        assert s[stage] is not None
    sources = sorted({n["source"] for n in result.nodes})
    assert sources == ["prediction", "reference"]
    pred = [n for n in result.nodes if n["source"] == "prediction"]
    ref = [n for n in result.nodes if n["source"] == "reference"]
    assert [n["short_axis_mm"] for n in pred] == pytest.approx([n["short_axis_mm"] for n in ref])
    assert len({n["tracking_uid"] for n in result.nodes}) == 6  # one per node and source


def test_model_grid_probabilities_reach_the_ct_grid_in_the_measuring_child(
    clean, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TorchScript model on its own grid hands over probabilities; the worker that holds the
    model never resamples them to the CT grid (that is the isolated child's post-processing), and
    the nodes are those of the same work done in one process."""
    import torch

    import pipeline.models.base as base
    from pipeline.models.torchscript import TorchScriptModel
    from tests.support.models import HuWindow, save_torchscript

    path = save_torchscript(
        HuWindow(40.0, 70.0), tmp_path / "coarse.pt", patch_size=(8, 32, 32), spacing_mm=[2.5, 1.7, 1.7]
    )
    model = TorchScriptModel(str(path), device=torch.device("cpu"))
    row = cohort_row(clean, ct_url=str(clean.ct_dir), seg_url=str(clean.seg_path))
    in_process = process_series(
        row, config=dataclasses.replace(_model_config(path), isolate=False), model=model
    )

    def not_in_the_worker(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the worker resampled the prediction to the CT grid")

    monkeypatch.setattr(base, "probabilities_to_ct_grid", not_in_the_worker)
    handed_over = []
    save = base.SavedPrediction.save

    def recorded(prediction, file):  # type: ignore[no-untyped-def]
        handed_over.append((prediction.mask, np.shape(prediction.probabilities), prediction.grid))
        return save(prediction, file)

    monkeypatch.setattr(base.SavedPrediction, "save", recorded)
    isolated = process_series(row, config=_model_config(path), model=model)
    assert isolated.series["status"] == "ok", isolated.errors
    ((mask, shape, grid),) = handed_over  # the model's grid, not the CT's
    assert mask is None and grid is not None and shape == grid.size_zyx != clean.mask.shape
    assert isolated.series["postprocess_s"] > 0
    assert isolated.series["n_prediction_nodes"] == in_process.series["n_prediction_nodes"] > 0

    def volumes(result):  # type: ignore[no-untyped-def]
        return [n["volume_ml"] for n in result.nodes if n["source"] == "prediction"]

    assert volumes(isolated) == volumes(in_process)


def test_tracking_uids_are_those_of_the_seg_and_sr(clean, window_model, tmp_path: Path) -> None:
    """A node's tracking UID is the same in the nodes table, its SEG segment and its SR group,
    and stays the same on a rerun of the same inputs."""
    import highdicom as hd

    from pipeline.dicom.sr import read_measurements

    path, model = window_model
    row = cohort_row(clean, ct_url=str(clean.ct_dir), seg_url=str(clean.seg_path))
    runs = []
    for _ in range(2):
        sink = MemorySink()
        result = process_series(row, config=_model_config(path), model=model, sink=sink)
        runs.append((result, sink))
    (result, sink), (again, _) = runs
    table = {n["node_index"]: n["tracking_uid"] for n in result.nodes if n["source"] == "prediction"}
    assert table == {n["node_index"]: n["tracking_uid"] for n in again.nodes if n["source"] == "prediction"}
    seg_file, sr_file = tmp_path / "seg.dcm", tmp_path / "sr.dcm"
    seg_file.write_bytes(sink.stored[("seg", clean.series_uid)])
    sr_file.write_bytes(sink.stored[("sr", clean.series_uid)])
    seg = hd.seg.segread(seg_file)
    in_seg = {int(d.SegmentNumber): str(d.TrackingUID) for d in seg.SegmentSequence}
    in_sr = {int(m["segment_number"]): m["tracking_uid"] for m in read_measurements(str(sr_file))}
    assert table == in_seg == in_sr and len(table) == 3


def test_reference_mode_writes_a_per_node_seg_sr_and_picture(phantom) -> None:
    sink = MemorySink()
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    result = process_series(row, config=_config(), sink=sink)
    assert result.series["status"] == "ok", result.errors
    assert sorted(kind for kind, _ in sink.stored) == ["qc", "seg", "sr"]
    assert all(n["tracking_uid"] for n in result.nodes) and result.series["model"] == "reference"


def test_model_mode_without_reference_is_not_an_error(clean, window_model) -> None:
    path, model = window_model
    row = cohort_row(clean, ct_url=str(clean.ct_dir), seg_url=None, annotation="partial")
    result = process_series(row, config=_model_config(path), model=model)
    assert result.series["status"] == "ok"
    assert result.series["dsc"] is None and result.series["n_prediction_nodes"] == 3
    assert result.series["seg_uri"] is None  # no sink given


def test_partial_annotation_counts_no_false_positives(clean, window_model) -> None:
    path, model = window_model
    row = cohort_row(clean, ct_url=str(clean.ct_dir), seg_url=str(clean.seg_path), annotation="partial")
    result = process_series(row, config=_model_config(path), model=model)
    assert result.series["false_positive_nodes"] is None
    assert result.series["sensitivity_short_axis_ge_10mm"] == pytest.approx(1.0)


def test_a_mask_on_another_grid_is_an_inference_error(clean, window_model) -> None:
    from pipeline.models.base import Prediction

    path, _ = window_model

    class WrongShape:
        name, version = "wrong", "0"

        def predict(self, ct, *, save_to=None):  # type: ignore[no-untyped-def]
            return Prediction(mask=np.zeros(ct.hu.shape[1:], dtype=bool), inference_s=0.1)

    row = cohort_row(clean, ct_url=str(clean.ct_dir), seg_url=str(clean.seg_path))
    result = process_series(row, config=_model_config(path), model=WrongShape())
    (error,) = result.errors
    assert (error["stage"], error["error_type"]) == ("inference", "ModelError")
    assert "shape (128, 128)" in error["message"] and result.nodes == []


def test_model_failure_is_an_inference_error(clean, window_model, monkeypatch: pytest.MonkeyPatch) -> None:
    path, model = window_model

    class Broken:
        name, version = "broken", "0"

        def predict(self, ct, *, save_to=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("CUDA out of memory (simulated)")

    row = cohort_row(clean, ct_url=str(clean.ct_dir), seg_url=str(clean.seg_path))
    result = process_series(row, config=_model_config(path), model=Broken())
    assert result.series["status"] == "error"
    assert (result.errors[0]["stage"], result.errors[0]["error_type"]) == ("inference", "RuntimeError")


def test_the_done_line_names_only_the_masks_measured(phantom, caplog: pytest.LogCaptureFixture) -> None:
    """Reference mode measured no prediction: the log says so, not 'None predicted nodes'."""
    import logging

    caplog.set_level(logging.INFO, logger="pipeline.process")
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    process_series(row, config=_config())
    (line,) = [r.getMessage() for r in caplog.records if "slices," in r.getMessage()]
    assert line.endswith("40 slices, 3 reference nodes") and "None" not in line


def test_a_patient_id_with_markup_is_drawn_as_text_and_the_series_is_ok(phantom) -> None:
    """A ``$...$`` in the cohort's patient ID made matplotlib parse mathtext and fail at qc."""
    sink = MemorySink()
    row = cohort_row(
        phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path), patient_id=r"case $\frac{$ 7"
    )
    result = process_series(row, config=_config(), sink=sink)
    assert result.series["status"] == "ok", result.errors
    assert result.series["patient_id"] == r"case $\frac{$ 7"
    assert sink.stored[("qc", phantom.series_uid)].startswith(b"\x89PNG")

"""``lnq evaluate``: SEG and label-image inputs, grids, detection figures, folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.volume import mask_to_sitk
from pipeline.evaluate.case import evaluate_files, evaluate_folders, evaluate_masks
from pipeline.evaluate.lnq2023 import score_case
from tests.support.phantoms import ct_datasets, write_seg


@pytest.fixture(scope="module")
def prediction(phantom, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A prediction SEG: the reference dilated in plane, minus the smallest node, plus a false node."""
    mask = ndimage.binary_dilation(phantom.mask, ndimage.generate_binary_structure(3, 1)[1:2])
    mask[phantom.mask.shape[0] - 6 :] = False  # drops the node near the top
    mask[3:6, 10:14, 10:14] = True  # a node the reference does not have
    path = tmp_path_factory.mktemp("pred") / "pred.dcm"
    write_seg(ct_datasets(phantom), mask, path, algorithm_type="AUTOMATIC")
    return path, mask


def test_seg_against_seg_on_union_grid_equals_ct_grid(phantom, prediction) -> None:
    path, mask = prediction
    on_union = evaluate_files(str(path), str(phantom.seg_path), fully_annotated=True)
    on_ct = evaluate_files(str(path), str(phantom.seg_path), ct_dir=str(phantom.ct_dir), fully_annotated=True)
    ct = decode_ct_series(str(phantom.ct_dir))
    direct = score_case(mask_to_sitk(mask, ct.geometry), mask_to_sitk(phantom.mask, ct.geometry))
    assert on_ct["dsc"] == pytest.approx(direct.dsc)
    assert on_ct["assd_mm"] == pytest.approx(direct.assd_mm)
    for key, value in on_ct.items():
        assert on_union[key] == pytest.approx(value), key
    assert on_ct["false_positive_nodes"] == 1
    assert on_ct["n_reference_nodes_ge_10mm_detected"] == 2
    assert on_ct["sensitivity_short_axis_ge_10mm"] == pytest.approx(1.0)


def test_label_images_nrrd_and_nifti(phantom, prediction, tmp_path: Path) -> None:
    path, mask = prediction
    ct = decode_ct_series(str(phantom.ct_dir))
    sitk.WriteImage(mask_to_sitk(mask, ct.geometry), str(tmp_path / "pred.nrrd"))
    sitk.WriteImage(mask_to_sitk(phantom.mask, ct.geometry), str(tmp_path / "ref.nii.gz"))
    from_files = evaluate_files(str(tmp_path / "pred.nrrd"), str(tmp_path / "ref.nii.gz"))
    from_segs = evaluate_files(str(path), str(phantom.seg_path), ct_dir=str(phantom.ct_dir))
    assert from_files["dsc"] == pytest.approx(from_segs["dsc"])
    assert from_files["assd_mm"] == pytest.approx(from_segs["assd_mm"], rel=1e-4)
    assert from_files["false_positive_nodes"] is None  # not declared fully annotated


def test_label_images_on_different_grids_are_refused(phantom, tmp_path: Path) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    sitk.WriteImage(mask_to_sitk(phantom.mask, ct.geometry), str(tmp_path / "ref.nrrd"))
    shifted = mask_to_sitk(phantom.mask, ct.geometry)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(shifted, str(tmp_path / "pred.nrrd"))
    with pytest.raises(ValueError, match="not on the same grid: origin"):
        evaluate_files(str(tmp_path / "pred.nrrd"), str(tmp_path / "ref.nrrd"))


def test_empty_prediction(phantom) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    empty = mask_to_sitk(np.zeros_like(phantom.mask), ct.geometry)
    out = evaluate_masks(empty, mask_to_sitk(phantom.mask, ct.geometry), fully_annotated=True)
    assert out["dsc"] == 0.0 and out["assd_mm"] is None
    assert out["sensitivity_short_axis_ge_10mm"] == 0.0 and out["false_positive_nodes"] == 0


def test_folders_give_cases_and_aggregates(phantom, tmp_path: Path) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for name, pred in (("a.nrrd", phantom.mask), ("b.nrrd", np.zeros_like(phantom.mask))):
        sitk.WriteImage(mask_to_sitk(pred, ct.geometry), str(tmp_path / "pred" / name))
        sitk.WriteImage(mask_to_sitk(phantom.mask, ct.geometry), str(tmp_path / "ref" / name))
    sitk.WriteImage(mask_to_sitk(phantom.mask, ct.geometry), str(tmp_path / "ref" / "c.nrrd"))
    out = evaluate_folders(str(tmp_path / "pred"), str(tmp_path / "ref"))
    assert out["cases"]["c.nrrd"]["missing_prediction"] is True
    agg = out["aggregate"]
    assert agg["n_cases"] == 3 and agg["n_assd_nan"] == 2
    assert agg["dsc_mean"] == pytest.approx(1 / 3)


def test_cli_prints_json(phantom, prediction) -> None:
    path, _ = prediction
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_jobs.cli",
            "evaluate",
            "--pred",
            str(path),
            "--ref",
            str(phantom.seg_path),
            "--json",
            "--fully-annotated",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) >= {"dsc", "assd_mm", "sensitivity_short_axis_ge_10mm", "false_positive_nodes"}
    assert 0 < out["dsc"] < 1 and out["assd_mm"] > 0

"""``lnq evaluate``: SEG and label-image inputs, grids, detection figures, folders."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from beam_jobs.cli import main as cli_main
from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.seg_writer import nodes_seg
from pipeline.errors import ScoreError
from pipeline.evaluate.case import case_name, evaluate_files, evaluate_folders, evaluate_masks
from pipeline.evaluate.images import ct_ends, read_on_ct
from pipeline.evaluate.lnq2023 import score_case
from pipeline.geometry import mask_to_sitk
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled
from tests.conftest import REAL_CT
from tests.support.cli import LNQ
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


def _within(shape: tuple[int, ...], depth: int, faces: str) -> np.ndarray:
    """Voxels within ``depth`` voxels of the named faces: ``z0 z1 y0 y1 x0 x1`` (first, last)."""
    mask = np.zeros(shape, dtype=bool)
    for face in faces.split():
        axis, end = "zyx".index(face[0]), face[1] == "1"
        index = [slice(None)] * 3
        index[axis] = slice(shape[axis] - depth, None) if end else slice(0, depth)
        mask[tuple(index)] = True
    return mask


def _pipeline_seg(mask: np.ndarray, ct_dir: Path, path: Path) -> Path:
    """The mask as this pipeline writes a prediction: one segment per node, highdicom."""
    ct = decode_ct_series(str(ct_dir))
    labels = label_nodes(mask, ct.geometry)
    nodes = measure_labelled(labels, ct.geometry)
    nodes_seg(labels, ct, nodes, model_name="test", model_version="1").save_as(path)
    return path


@pytest.mark.parametrize(
    "pred_faces, ref_faces, pred_by",
    [
        ("z0 y0 x0", "z1 y1 x1", "pipeline"),  # between them the masks touch all six faces of the CT
        ("z0 z1 y0 y1 x0 x1", "y1 x0", "pipeline"),  # the prediction touches every face (every slice)
        ("z0", "x1", "pipeline"),  # the prediction touches the first slice, not the last
        ("z1", "", "pipeline"),  # the last slice only
        ("y0 x1", "y1 x0", "pipeline"),  # in plane only
        ("y0 x1", "y1 x0", "dcmqi-like"),  # in plane only, neither SEG says where the CT ends
    ],
)
def test_masks_touching_the_ct_border_score_the_same_on_union_and_ct_grid(
    phantom, tmp_path: Path, pred_faces: str, ref_faces: str, pred_by: str
) -> None:
    """The union of SEG extents was padded by a voxel all round, making the CT's border
    background (ASSD 30.23 mm on the union against 28.79 mm on the CT in one pair)."""
    shape = phantom.mask.shape
    pred = _within(shape, 2, pred_faces) | np.roll(phantom.mask, 2, axis=2)
    ref = _within(shape, 3, ref_faces) | phantom.mask
    for mask, faces in ((pred, pred_faces), (ref, ref_faces)):
        if "z0" not in faces:
            mask[:2] = False  # off the CT's first slices unless the case says otherwise
        if "z1" not in faces:
            mask[-2:] = False
    if pred_by == "pipeline":
        _pipeline_seg(pred, phantom.ct_dir, tmp_path / "pred.dcm")
    else:
        write_seg(ct_datasets(phantom), pred, tmp_path / "pred.dcm", algorithm_type="AUTOMATIC")
    write_seg(ct_datasets(phantom), ref, tmp_path / "ref.dcm")
    on_union = evaluate_files(str(tmp_path / "pred.dcm"), str(tmp_path / "ref.dcm"), fully_annotated=True)
    on_ct = evaluate_files(
        str(tmp_path / "pred.dcm"),
        str(tmp_path / "ref.dcm"),
        ct_dir=str(phantom.ct_dir),
        fully_annotated=True,
    )
    ct = decode_ct_series(str(phantom.ct_dir))
    direct = score_case(mask_to_sitk(pred, ct.geometry), mask_to_sitk(ref, ct.geometry))
    assert on_ct["assd_mm"] == pytest.approx(direct.assd_mm, rel=1e-12)
    assert on_ct["dsc"] == pytest.approx(direct.dsc, rel=1e-12)
    for key, value in on_ct.items():
        assert on_union[key] == pytest.approx(value, rel=1e-12), key


def test_ct_ends_from_a_seg_that_lists_its_series(phantom, tmp_path: Path) -> None:
    mask = np.zeros(phantom.mask.shape, dtype=bool)
    mask[10:20] = phantom.mask[10:20]
    ct = decode_ct_series(str(phantom.ct_dir))
    first, last = ct.geometry.index_to_physical(np.array([[0, 0, 0], [mask.shape[0] - 1, 0, 0]], dtype=float))
    ends = ct_ends(str(_pipeline_seg(mask, phantom.ct_dir, tmp_path / "ours.dcm")))
    assert ends is not None
    assert np.allclose(ends, [first, last], atol=1e-3)
    # a SEG that lists only the instances of its own frames, as dcmqi writes them, says nothing
    dcmqi = REAL_CT / "dcmqi-ct3slice"
    if (dcmqi / "liver_seg.dcm").is_file():
        assert ct_ends(str(dcmqi / "liver_seg.dcm")) is None


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
    with pytest.raises(ScoreError, match="not on the same grid: origin"):
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
            *LNQ,
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


def test_probability_map_needs_a_threshold(phantom, tmp_path: Path) -> None:
    """A float map was scored as if every non-zero voxel were foreground (DSC 0.07, ASSD null)."""
    ct = decode_ct_series(str(phantom.ct_dir))
    rng = np.random.default_rng(0)
    probabilities = np.where(
        phantom.mask, rng.uniform(0.6, 1.0, phantom.mask.shape), rng.uniform(0.0, 0.4, phantom.mask.shape)
    )
    sitk.WriteImage(
        ct.geometry.apply_to(sitk.GetImageFromArray(probabilities.astype(np.float32))),
        str(tmp_path / "p.nrrd"),
    )
    sitk.WriteImage(mask_to_sitk(phantom.mask, ct.geometry), str(tmp_path / "ref.nrrd"))
    with pytest.raises(ScoreError, match="non-integer values .*probability map"):
        evaluate_files(str(tmp_path / "p.nrrd"), str(tmp_path / "ref.nrrd"))
    with pytest.raises(ScoreError, match="non-integer values"):
        evaluate_files(str(tmp_path / "p.nrrd"), str(tmp_path / "ref.nrrd"), ct_dir=str(phantom.ct_dir))
    out = evaluate_files(str(tmp_path / "p.nrrd"), str(tmp_path / "ref.nrrd"), threshold=0.5)
    assert out["dsc"] == 1.0 and out["assd_mm"] == 0.0
    on_ct = evaluate_files(
        str(tmp_path / "p.nrrd"), str(phantom.seg_path), ct_dir=str(phantom.ct_dir), threshold=0.5
    )
    assert on_ct["dsc"] == 1.0 and on_ct["assd_mm"] == 0.0
    with pytest.raises(ValueError, match="not a probability"):
        evaluate_files(str(tmp_path / "p.nrrd"), str(tmp_path / "ref.nrrd"), threshold=50)


def test_fractional_seg_needs_a_threshold(phantom, tmp_path: Path) -> None:
    import highdicom as hd

    reference = hd.seg.segread(str(phantom.seg_path))
    probabilities = np.where(phantom.mask, 0.8, 0.1).astype(np.float32)
    seg = hd.seg.Segmentation(
        source_images=ct_datasets(phantom),
        pixel_array=probabilities,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[reference.SegmentSequence[0]],
        series_instance_uid=hd.UID(),
        series_number=3001,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(tmp_path / "fractional.dcm")
    path = str(tmp_path / "fractional.dcm")
    with pytest.raises(ScoreError, match="FRACTIONAL SEG"):
        evaluate_files(path, str(phantom.seg_path))
    with pytest.raises(ScoreError, match="FRACTIONAL SEG"):
        evaluate_files(path, str(phantom.seg_path), ct_dir=str(phantom.ct_dir))
    for ct_dir in (None, str(phantom.ct_dir)):
        out = evaluate_files(path, str(phantom.seg_path), ct_dir=ct_dir, threshold=0.5)
        assert out["dsc"] == 1.0 and out["assd_mm"] == 0.0


def test_two_dimensional_image_names_the_expected_dimension(phantom, tmp_path: Path) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    sitk.WriteImage(sitk.GetImageFromArray(phantom.mask[20].astype(np.uint8)), str(tmp_path / "slice.nrrd"))
    sitk.WriteImage(mask_to_sitk(phantom.mask, ct.geometry), str(tmp_path / "ref.nrrd"))
    with pytest.raises(ScoreError, match=r"slice.nrrd is a 2-D image .*expected a 3-D label image"):
        evaluate_files(str(tmp_path / "slice.nrrd"), str(tmp_path / "ref.nrrd"))


def test_user_mistakes_raise_clear_errors(phantom, tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match="missing.nrrd does not exist"):
        evaluate_files(str(tmp_path / "missing.nrrd"), str(phantom.seg_path))
    with pytest.raises(FileNotFoundError, match="prediction folder .*nowhere does not exist"):
        evaluate_folders(str(tmp_path / "nowhere"), str(tmp_path / "ref"))
    with pytest.raises(FileNotFoundError, match="has no files"):
        evaluate_folders(str(tmp_path / "ref"), str(tmp_path / "ref"))
    with pytest.raises(ScoreError, match="notes.txt is neither a DICOM SEG nor an image"):
        evaluate_files(str(tmp_path / "notes.txt"), str(phantom.seg_path))
    with pytest.raises(ScoreError, match="is a folder, not a mask file"):
        evaluate_files(str(tmp_path / "ref"), str(phantom.seg_path))
    with pytest.raises(FileNotFoundError, match="CT series folder .*no-ct does not exist"):
        evaluate_files(str(phantom.seg_path), str(phantom.seg_path), ct_dir=str(tmp_path / "no-ct"))


def test_case_name_strips_known_extensions_only() -> None:
    assert case_name("case01.nii.gz") == "case01"
    assert case_name("case01.NRRD") == "case01"
    assert case_name("lnq_007.seg.nrrd") == "lnq_007"
    assert case_name("1.2.840.10008.99.dcm") == "1.2.840.10008.99"
    assert case_name("1.2.840.10008.99") == "1.2.840.10008.99"


def test_folders_with_ct_dir_score_each_case_on_its_ct(
    phantom, prediction, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = prediction
    for folder in ("pred", "ref", "ct"):
        (tmp_path / folder).mkdir()
    shutil.copy(path, tmp_path / "pred" / "case01.dcm")
    shutil.copy(phantom.seg_path, tmp_path / "ref" / "case01.dcm")
    shutil.copytree(phantom.ct_dir, tmp_path / "ct" / "case01")
    out = evaluate_folders(
        str(tmp_path / "pred"), str(tmp_path / "ref"), ct_dir=str(tmp_path / "ct"), fully_annotated=True
    )
    assert out["cases"]["case01.dcm"] == evaluate_files(
        str(path), str(phantom.seg_path), ct_dir=str(phantom.ct_dir), fully_annotated=True
    )
    shutil.copy(phantom.seg_path, tmp_path / "ref" / "case02.dcm")
    with pytest.raises(
        FileNotFoundError, match=r"1 of 2 cases have no CT series folder .*ct/case02/ for case02.dcm"
    ):
        evaluate_folders(str(tmp_path / "pred"), str(tmp_path / "ref"), ct_dir=str(tmp_path / "ct"))
    args = [
        "--pred-dir",
        str(tmp_path / "pred"),
        "--ref-dir",
        str(tmp_path / "ref"),
        "--ct-dir",
        str(tmp_path / "ct"),
    ]
    try:  # the CLI prints such user mistakes as one line (exit 2); the error itself before that change
        code = cli_main(["evaluate", *args])
    except FileNotFoundError as exc:
        message = str(exc)
    else:
        assert code == 2
        message = capsys.readouterr().err
    assert "no CT series folder" in message and "case02" in message and "Traceback" not in message


def test_cli_threshold_and_option_pairs(phantom, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    probabilities = np.where(phantom.mask, 0.7, 0.2).astype(np.float32)
    sitk.WriteImage(ct.geometry.apply_to(sitk.GetImageFromArray(probabilities)), str(tmp_path / "p.nrrd"))
    pair = ["evaluate", "--pred", str(tmp_path / "p.nrrd"), "--ref", str(phantom.seg_path)]
    assert cli_main([*pair, "--threshold", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dsc"] == 1.0
    # a prediction shifted by 3 voxels: its nodes match at IoU 0.1, not at 0.9
    ct_mask = mask_to_sitk(np.roll(phantom.mask, 3, axis=2), ct.geometry)
    sitk.WriteImage(ct_mask, str(tmp_path / "shifted.nrrd"))
    shifted = ["evaluate", "--pred", str(tmp_path / "shifted.nrrd"), "--ref", str(phantom.seg_path)]
    found = {}
    for iou in ("0.1", "0.9"):
        assert cli_main([*shifted, "--fully-annotated", "--iou-threshold", iou, "--json"]) == 0
        found[iou] = json.loads(capsys.readouterr().out)
    assert (
        found["0.1"]["n_reference_nodes_ge_10mm_detected"] == 2 and found["0.1"]["false_positive_nodes"] == 0
    )
    assert (
        found["0.9"]["n_reference_nodes_ge_10mm_detected"] == 0 and found["0.9"]["false_positive_nodes"] == 3
    )
    assert found["0.9"]["detection_iou_threshold"] == 0.9 and found["0.9"]["dsc"] == found["0.1"]["dsc"]
    for extra, message in (
        (["--threshold", "50"], "not a probability"),
        (["--ct-dir", str(tmp_path)], "--pred-dir and --ref-dir [--ct-dir]"),
        (["--iou-threshold", "0"], "--iou-threshold 0.0 is not in (0, 1]"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*pair, *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_label_image_on_the_ct_must_have_its_size(phantom, tmp_path: Path) -> None:
    """Same origin, spacing and direction but one slice short: the size check could never fail."""
    ct = decode_ct_series(str(phantom.ct_dir))
    short = mask_to_sitk(phantom.mask[:-1], ct.geometry)
    sitk.WriteImage(short, str(tmp_path / "short.nrrd"))
    with pytest.raises(ScoreError, match=r"short.nrrd is not on the CT grid: size \[z, y, x\]"):
        read_on_ct(str(tmp_path / "short.nrrd"), ct)

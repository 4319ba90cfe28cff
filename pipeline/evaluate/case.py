"""Score one prediction file against one reference file (what ``lnq evaluate`` prints).

Every path measures nodes on axial slices (see ``images.to_axial``), with or
without the CT: the reference nodes' short axes, which decide the detection
figures, are the ones ``lnq run`` reports.

Folders: predictions and references are paired by file name. With a CT folder,
case ``NAME.EXT`` is scored on the CT series in ``CT_DIR/NAME/`` (the file name
without its extension, see :func:`case_name`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipeline.dicom.ct import decode_ct_series
from pipeline.evaluate.aggregate import aggregate_scores
from pipeline.evaluate.detection import DEFAULT_IOU_THRESHOLD, check_iou_threshold, detect
from pipeline.evaluate.images import common_grid, read_label_image, read_on_ct, require_file, to_axial
from pipeline.evaluate.lnq2023 import check_label_image, check_same_grid, score_case
from pipeline.geometry import Geometry
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled

CASE_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")
"""Extensions :func:`case_name` strips (the longest that matches), compared case-insensitively."""


def case_name(file_name: str) -> str:
    """A case's name: its file name without a known extension (``case01.nii.gz`` -> ``case01``).

    Only the extensions in :data:`CASE_EXTENSIONS` are removed, so that names made of
    DICOM UIDs (``1.2.840.1234.dcm`` -> ``1.2.840.1234``) keep their dots.
    """
    lower = file_name.lower()
    for extension in CASE_EXTENSIONS:
        if lower.endswith(extension) and len(file_name) > len(extension):
            return file_name[: -len(extension)]
    return file_name


def evaluate_masks(
    prediction: sitk.Image,
    reference: sitk.Image,
    *,
    fully_annotated: bool = False,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> dict[str, Any]:
    """LNQ2023 DSC and ASSD plus node detection figures for two masks on one grid.

    Both images are put in axial orientation first (a no-op for images already
    axial, such as masks on a CT grid), so nodes are measured on axial slices.
    Detection matches nodes one to one with IoU >= ``iou_threshold``
    (:mod:`pipeline.evaluate.detection`).
    """
    check_iou_threshold(iou_threshold)
    check_label_image(prediction, "prediction")
    check_label_image(reference, "reference")
    check_same_grid(prediction, reference)
    prediction, reference = to_axial(prediction), to_axial(reference)
    result: dict[str, Any] = score_case(prediction, reference).as_json()
    geometry = Geometry.from_sitk(reference)
    pred = sitk.GetArrayViewFromImage(prediction) != 0
    ref = sitk.GetArrayViewFromImage(reference) != 0
    if ref.any():
        ref_labels = label_nodes(ref, geometry)  # labelled once, for both measuring and matching
        ref_nodes = measure_labelled(ref_labels, geometry)
        detection = detect(
            label_nodes(pred, geometry),
            ref_labels,
            ref_short_axis_mm={n.node_index: n.short_axis_mm for n in ref_nodes},
            fully_annotated=fully_annotated,
            iou_threshold=iou_threshold,
        )
        result.update(detection.columns())
    return result


def evaluate_files(
    prediction_path: str,
    reference_path: str,
    *,
    ct_dir: str | None = None,
    fully_annotated: bool = False,
    threshold: float | None = None,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> dict[str, Any]:
    """Read both files (on the CT grid when ``ct_dir`` is given) and score them.

    ``threshold``: the prediction is a probability map (or a FRACTIONAL SEG);
    voxels with a value >= threshold are foreground. Without it, images with
    values other than whole numbers are refused. The reference is always read
    as labels.
    """
    _check_threshold(threshold)
    check_iou_threshold(iou_threshold)
    require_file(prediction_path)
    require_file(reference_path)
    if ct_dir is not None:
        _require_folder(ct_dir, "CT series folder")
        ct = decode_ct_series(ct_dir)
        pred = read_on_ct(prediction_path, ct, threshold=threshold)
        ref = read_on_ct(reference_path, ct)
    else:
        pred, ref = common_grid(
            read_label_image(prediction_path, threshold=threshold), read_label_image(reference_path)
        )
    return evaluate_masks(pred, ref, fully_annotated=fully_annotated, iou_threshold=iou_threshold)


def evaluate_folders(
    prediction_dir: str,
    reference_dir: str,
    *,
    ct_dir: str | None = None,
    fully_annotated: bool = False,
    threshold: float | None = None,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> dict[str, Any]:
    """Score files with the same name in two folders; per case and cohort aggregates.

    With ``ct_dir``, each case is scored on its CT series, ``ct_dir/<case_name(file)>/``.
    """
    _check_threshold(threshold)
    check_iou_threshold(iou_threshold)
    _require_folder(prediction_dir, "prediction folder")
    _require_folder(reference_dir, "reference folder")
    names = sorted(n for n in os.listdir(reference_dir) if not n.startswith("."))
    if not names:
        raise FileNotFoundError(f"reference folder {reference_dir} has no files")
    if ct_dir is not None:
        _require_folder(ct_dir, "CT folder")
        no_ct = [n for n in names if not os.path.isdir(os.path.join(ct_dir, case_name(n)))]
        if no_ct:
            raise FileNotFoundError(
                f"{len(no_ct)} of {len(names)} cases have no CT series folder in {ct_dir}: "
                f"for example {os.path.join(ct_dir, case_name(no_ct[0]))}/ for {no_ct[0]}"
            )
    cases: dict[str, Mapping[str, Any]] = {}
    for name in names:
        if not os.path.isfile(os.path.join(prediction_dir, name)):
            cases[name] = {"dsc": 0.0, "assd_mm": None, "missing_prediction": True}
            continue
        cases[name] = evaluate_files(
            os.path.join(prediction_dir, name),
            os.path.join(reference_dir, name),
            ct_dir=None if ct_dir is None else os.path.join(ct_dir, case_name(name)),
            fully_annotated=fully_annotated,
            threshold=threshold,
            iou_threshold=iou_threshold,
        )
    dsc = [float(c["dsc"]) for c in cases.values()]
    assd = [np.nan if c["assd_mm"] is None else float(c["assd_mm"]) for c in cases.values()]
    return {"cases": cases, "aggregate": aggregate_scores(dsc, assd)}


def _require_folder(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{what} {path} is not a folder")


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not (math.isfinite(threshold) and 0.0 < threshold <= 1.0):
        raise ValueError(f"threshold {threshold} is not a probability in (0, 1]")

"""Score one prediction file against one reference file (what ``lnq evaluate`` prints)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.volume import Geometry
from pipeline.evaluate.aggregate import aggregate_scores
from pipeline.evaluate.detection import detect
from pipeline.evaluate.images import common_grid, read_label_image, read_on_ct
from pipeline.evaluate.lnq2023 import score_case
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled


def evaluate_masks(
    prediction: sitk.Image, reference: sitk.Image, *, fully_annotated: bool = False
) -> dict[str, Any]:
    """LNQ2023 DSC and ASSD plus node detection figures for two masks on one grid."""
    result: dict[str, Any] = score_case(prediction, reference).as_json()
    geometry = Geometry.from_sitk(reference)
    pred = sitk.GetArrayFromImage(prediction) > 0
    ref = sitk.GetArrayFromImage(reference) > 0
    if ref.any():
        ref_labels = label_nodes(ref, geometry)  # labelled once, for both measuring and matching
        ref_nodes = measure_labelled(ref_labels, geometry)
        detection = detect(
            label_nodes(pred, geometry),
            ref_labels,
            ref_short_axis_mm={n.node_index: n.short_axis_mm for n in ref_nodes},
            fully_annotated=fully_annotated,
        )
        result.update(detection.columns())
    return result


def evaluate_files(
    prediction_path: str,
    reference_path: str,
    *,
    ct_dir: str | None = None,
    fully_annotated: bool = False,
) -> dict[str, Any]:
    """Read both files (on the CT grid when ``ct_dir`` is given) and score them."""
    if ct_dir is not None:
        ct = decode_ct_series(ct_dir)
        pred, ref = read_on_ct(prediction_path, ct), read_on_ct(reference_path, ct)
    else:
        pred, ref = common_grid(read_label_image(prediction_path), read_label_image(reference_path))
    return evaluate_masks(pred, ref, fully_annotated=fully_annotated)


def evaluate_folders(
    prediction_dir: str, reference_dir: str, *, fully_annotated: bool = False
) -> dict[str, Any]:
    """Score files with the same name in two folders; per case and cohort aggregates."""
    names = sorted(n for n in os.listdir(reference_dir) if not n.startswith("."))
    missing = [n for n in names if not os.path.isfile(os.path.join(prediction_dir, n))]
    cases: dict[str, Mapping[str, Any]] = {}
    for name in names:
        if name in missing:
            cases[name] = {"dsc": 0.0, "assd_mm": None, "missing_prediction": True}
            continue
        cases[name] = evaluate_files(
            os.path.join(prediction_dir, name),
            os.path.join(reference_dir, name),
            fully_annotated=fully_annotated,
        )
    dsc = [float(c["dsc"]) for c in cases.values()]
    assd = [np.nan if c["assd_mm"] is None else float(c["assd_mm"]) for c in cases.values()]
    return {"cases": cases, "aggregate": aggregate_scores(dsc, assd)}

"""Node-level detection, which the challenge does not score: one-to-one matching by overlap.

Nodes are 26-connected components. Each predicted node may detect at most one
reference node and each reference node be detected by at most one predicted
node, and only when the two overlap enough: their intersection over union (IoU,
in voxels) is at least ``iou_threshold`` (default 0.1, the threshold nnDetection
scores LIDC and LUNA with). Pairs are matched greedily, highest IoU first (ties
by reference then predicted label, so the result does not depend on the order
voxels were found), the way detection benchmarks match boxes when there is no
confidence score to sort by. So one blob over several nodes detects at most one
of them, and a node predicted as two halves is one hit and one unmatched
prediction.

Sensitivity counts only reference nodes with short axis >= 10 mm, but every
reference node takes part in the matching (a prediction of a small node is not
a false positive). A predicted node matched to no reference node is a false
positive, counted only for fully annotated cases: a partial annotation does not
say what is absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.enums import DEFAULT_IOU_THRESHOLD
from pipeline.errors import ScoreError
from pipeline.evaluate.lnq2023 import flat_nonzero
from pipeline.measure.categories import is_pathological

__all__ = [
    "DEFAULT_IOU_THRESHOLD",
    "Detection",
    "NodeMatch",
    "check_iou_threshold",
    "detect",
    "label_sizes",
    "match_nodes",
    "overlapping_pairs",
]


@dataclass(frozen=True)
class NodeMatch:
    """A predicted node matched to a reference node, with their intersection over union."""

    pred_label: int
    ref_label: int
    iou: float


@dataclass(frozen=True)
class Detection:
    n_reference_short_axis_ge_10mm: int
    n_detected_short_axis_ge_10mm: int
    sensitivity_short_axis_ge_10mm: float  # NaN when there is no such reference node
    n_false_positive_nodes: int | None  # None unless fully annotated
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    matches: tuple[NodeMatch, ...] = ()

    def columns(self) -> dict[str, float | int | None]:
        return {
            "n_reference_nodes_ge_10mm_detected": self.n_detected_short_axis_ge_10mm,
            "sensitivity_short_axis_ge_10mm": (
                None
                if math.isnan(self.sensitivity_short_axis_ge_10mm)
                else self.sensitivity_short_axis_ge_10mm
            ),
            "false_positive_nodes": self.n_false_positive_nodes,
            "detection_iou_threshold": self.iou_threshold,
        }


def check_iou_threshold(iou_threshold: float) -> float:
    """The threshold as a float; a ``ValueError`` unless it lies in (0, 1]."""
    value = float(iou_threshold)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueError(f"IoU threshold {iou_threshold} is not in (0, 1]")
    return value


def overlapping_pairs(pred_labels: np.ndarray, ref_labels: np.ndarray) -> set[tuple[int, int]]:
    """(predicted label, reference label) pairs that share at least one voxel."""
    pred, ref, _ = _overlaps(pred_labels, ref_labels)
    return {(int(p), int(r)) for p, r in zip(pred, ref, strict=True)}


def _overlaps(pred_labels: np.ndarray, ref_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct overlapping pairs as aligned arrays (predicted, reference label) with the
    number of voxels each pair shares, without a Python object per voxel.

    Only the reference's foreground is visited; each overlapping voxel's pair becomes one
    integer code, and ``np.unique`` leaves one code per pair with its count.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ScoreError(f"label shapes differ: {pred_labels.shape} vs {ref_labels.shape}")
    ref_flat = ref_labels.reshape(-1)
    at = flat_nonzero(ref_flat if ref_flat.dtype.kind in "ub" else ref_flat > 0)
    ref = ref_flat[at].astype(np.int64)
    pred = pred_labels.reshape(-1)[at].astype(np.int64)
    keep = pred > 0
    pred, ref = pred[keep], ref[keep]
    if pred.size == 0:
        return pred, ref, pred
    base = int(ref.max()) + 1
    codes, counts = np.unique(pred * base + ref, return_counts=True)
    return codes // base, codes % base, counts.astype(np.int64)


def label_sizes(labels: np.ndarray) -> np.ndarray:
    """Voxels per label (index 0 unused), counted over the foreground only."""
    flat = labels.reshape(-1)
    at = flat_nonzero(flat if flat.dtype.kind in "ub" else flat > 0)
    values = flat[at].astype(np.int64)
    if values.size and values.min() < 0:
        raise ScoreError("labels must not be negative")
    return np.bincount(values, minlength=1)


def match_nodes(pred_labels: np.ndarray, ref_labels: np.ndarray, *, iou_threshold: float) -> list[NodeMatch]:
    """One-to-one matches between predicted and reference nodes with IoU >= ``iou_threshold``,
    highest IoU first (see the module docstring)."""
    threshold = check_iou_threshold(iou_threshold)
    pred, ref, shared = _overlaps(pred_labels, ref_labels)
    if pred.size == 0:
        return []
    pred_size, ref_size = label_sizes(pred_labels), label_sizes(ref_labels)
    iou = shared / (pred_size[pred] + ref_size[ref] - shared)
    keep = iou >= threshold
    pred, ref, iou = pred[keep], ref[keep], iou[keep]
    matches: list[NodeMatch] = []
    used_pred: set[int] = set()
    used_ref: set[int] = set()
    for i in np.lexsort((pred, ref, -iou)):  # by IoU descending, then reference, then prediction
        p, r = int(pred[i]), int(ref[i])
        if p in used_pred or r in used_ref:
            continue
        used_pred.add(p)
        used_ref.add(r)
        matches.append(NodeMatch(pred_label=p, ref_label=r, iou=float(iou[i])))
    return matches


def detect(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    *,
    ref_short_axis_mm: Mapping[int, float],
    fully_annotated: bool,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> Detection:
    """Detection figures from two label volumes (0 background, 1..N nodes)."""
    matches = match_nodes(pred_labels, ref_labels, iou_threshold=iou_threshold)
    hit_refs = {m.ref_label for m in matches}
    pathological = {r for r, short in ref_short_axis_mm.items() if is_pathological(short)}
    detected = len(pathological & hit_refs)
    false_positives = None
    if fully_annotated:
        n_pred = int(np.count_nonzero(label_sizes(pred_labels)[1:]))
        false_positives = n_pred - len(matches)
    return Detection(
        n_reference_short_axis_ge_10mm=len(pathological),
        n_detected_short_axis_ge_10mm=detected,
        sensitivity_short_axis_ge_10mm=detected / len(pathological) if pathological else math.nan,
        n_false_positive_nodes=false_positives,
        iou_threshold=check_iou_threshold(iou_threshold),
        matches=tuple(matches),
    )

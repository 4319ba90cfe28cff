"""Node-level detection, which the challenge does not score.

Nodes are 26-connected components. A reference node is detected when a
predicted node shares at least one voxel with it; a predicted node that shares
no voxel with any reference node is a false positive. Sensitivity counts only
reference nodes with short axis >= 10 mm. False positives are only counted for
fully annotated cases: a partial annotation does not say what is absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.errors import ScoreError
from pipeline.evaluate.lnq2023 import flat_nonzero
from pipeline.measure.categories import is_pathological


@dataclass(frozen=True)
class Detection:
    n_reference_short_axis_ge_10mm: int
    n_detected_short_axis_ge_10mm: int
    sensitivity_short_axis_ge_10mm: float  # NaN when there is no such reference node
    n_false_positive_nodes: int | None  # None unless fully annotated

    def columns(self) -> dict[str, float | int | None]:
        return {
            "n_reference_nodes_ge_10mm_detected": self.n_detected_short_axis_ge_10mm,
            "sensitivity_short_axis_ge_10mm": (
                None
                if math.isnan(self.sensitivity_short_axis_ge_10mm)
                else self.sensitivity_short_axis_ge_10mm
            ),
            "false_positive_nodes": self.n_false_positive_nodes,
        }


def overlapping_pairs(pred_labels: np.ndarray, ref_labels: np.ndarray) -> set[tuple[int, int]]:
    """(predicted label, reference label) pairs that share at least one voxel."""
    pred, ref = _overlapping_label_arrays(pred_labels, ref_labels)
    return {(int(p), int(r)) for p, r in zip(pred, ref, strict=True)}


def _overlapping_label_arrays(
    pred_labels: np.ndarray, ref_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct overlapping pairs as two aligned arrays, without a Python object per voxel.

    Only the reference's foreground is visited; each overlapping voxel's pair
    becomes one integer code, and ``np.unique`` leaves one code per pair.
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
        return pred, ref
    base = int(ref.max()) + 1
    codes = np.unique(pred * base + ref)
    return codes // base, codes % base


def detect(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    *,
    ref_short_axis_mm: Mapping[int, float],
    fully_annotated: bool,
) -> Detection:
    """Detection figures from two label volumes (0 background, 1..N nodes)."""
    pred, ref = _overlapping_label_arrays(pred_labels, ref_labels)
    hit_refs = {int(r) for r in np.unique(ref)}
    pathological = {r for r, short in ref_short_axis_mm.items() if is_pathological(short)}
    detected = len(pathological & hit_refs)
    false_positives = None
    if fully_annotated:
        n_pred = int(pred_labels.max()) if pred_labels.size else 0
        hit_preds = np.unique(pred)
        false_positives = n_pred - int(np.count_nonzero((hit_preds >= 1) & (hit_preds <= n_pred)))
    return Detection(
        n_reference_short_axis_ge_10mm=len(pathological),
        n_detected_short_axis_ge_10mm=detected,
        sensitivity_short_axis_ge_10mm=detected / len(pathological) if pathological else math.nan,
        n_false_positive_nodes=false_positives,
    )

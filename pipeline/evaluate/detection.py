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
    both = (pred_labels > 0) & (ref_labels > 0)
    return {(int(p), int(r)) for p, r in zip(pred_labels[both], ref_labels[both], strict=True)}


def detect(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    *,
    ref_short_axis_mm: Mapping[int, float],
    fully_annotated: bool,
) -> Detection:
    """Detection figures from two label volumes (0 background, 1..N nodes)."""
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"label shapes differ: {pred_labels.shape} vs {ref_labels.shape}")
    pairs = overlapping_pairs(pred_labels, ref_labels)
    hit_refs = {r for _, r in pairs}
    hit_preds = {p for p, _ in pairs}
    pathological = {r for r, short in ref_short_axis_mm.items() if is_pathological(short)}
    detected = len(pathological & hit_refs)
    n_pred = int(pred_labels.max())
    false_positives = len(set(range(1, n_pred + 1)) - hit_preds) if fully_annotated else None
    return Detection(
        n_reference_short_axis_ge_10mm=len(pathological),
        n_detected_short_axis_ge_10mm=detected,
        sensitivity_short_axis_ge_10mm=detected / len(pathological) if pathological else math.nan,
        n_false_positive_nodes=false_positives,
    )

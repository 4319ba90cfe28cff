from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import ScoreError
from pipeline.evaluate.aggregate import aggregate_scores
from pipeline.evaluate.detection import detect, match_nodes, overlapping_pairs


def test_aggregates_and_ranking_convention() -> None:
    out = aggregate_scores([0.8, 0.6, 0.0, 0.7], [2.0, 4.0, math.nan, 3.0])
    assert out["n_cases"] == 4 and out["n_assd_nan"] == 1
    assert out["dsc_mean"] == pytest.approx(0.525)
    assert out["dsc_median"] == pytest.approx(0.65)
    assert out["assd_mm_mean"] == pytest.approx(3.0)
    assert out["assd_mm_median"] == pytest.approx(3.0)
    assert out["assd_mm_mean_nan_as_max"] == pytest.approx((2 + 4 + 4 + 3) / 4)
    assert out["assd_mm_median_nan_as_max"] == pytest.approx(3.5)


def test_aggregates_all_nan() -> None:
    out = aggregate_scores([0.0], [math.nan])
    assert out["assd_mm_mean"] is None and out["assd_mm_mean_nan_as_max"] is None


def _labels() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((1, 10, 30), np.int32)
    ref[0, 1:3, 1:3] = 1  # short 12 mm, detected
    ref[0, 1:3, 6:8] = 2  # short 11 mm, missed
    ref[0, 1:3, 11:13] = 3  # short 5 mm, detected (not counted in sensitivity)
    pred = np.zeros_like(ref)
    pred[0, 2:4, 2:4] = 1  # overlaps reference node 1 by one voxel
    pred[0, 2:3, 12:13] = 2  # inside reference node 3
    pred[0, 7:9, 20:22] = 3  # nowhere near: a false positive
    return pred, ref


def test_detection_figures_full_annotation() -> None:
    pred, ref = _labels()
    d = detect(pred, ref, ref_short_axis_mm={1: 12.0, 2: 11.0, 3: 5.0}, fully_annotated=True)
    assert d.n_reference_short_axis_ge_10mm == 2
    assert d.n_detected_short_axis_ge_10mm == 1
    assert d.sensitivity_short_axis_ge_10mm == pytest.approx(0.5)
    assert d.n_false_positive_nodes == 1


def test_partial_annotation_counts_no_false_positives() -> None:
    pred, ref = _labels()
    d = detect(pred, ref, ref_short_axis_mm={1: 12.0, 2: 11.0, 3: 5.0}, fully_annotated=False)
    assert d.n_false_positive_nodes is None
    assert d.columns()["false_positive_nodes"] is None


def test_no_pathological_reference_nodes_gives_no_sensitivity() -> None:
    pred, ref = _labels()
    d = detect(pred, ref, ref_short_axis_mm={1: 5.0, 2: 5.0, 3: 5.0}, fully_annotated=True)
    assert math.isnan(d.sensitivity_short_axis_ge_10mm)
    assert d.columns()["sensitivity_short_axis_ge_10mm"] is None


def straightforward_pairs(pred: np.ndarray, ref: np.ndarray) -> set[tuple[int, int]]:
    """One Python pair per overlapping voxel, as detection first did it."""
    both = (pred > 0) & (ref > 0)
    return {(int(p), int(r)) for p, r in zip(pred[both], ref[both], strict=True)}


def straightforward_matches(pred: np.ndarray, ref: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """The one-to-one rule written out: IoU of every pair of labels, greedy from the highest."""
    candidates = []
    for p in range(1, int(pred.max()) + 1):
        for r in range(1, int(ref.max()) + 1):
            inter = int(np.count_nonzero((pred == p) & (ref == r)))
            union = int(np.count_nonzero((pred == p) | (ref == r)))
            if inter and inter / union >= threshold:
                candidates.append((-inter / union, r, p))
    used_p: set[int] = set()
    used_r: set[int] = set()
    matches = []
    for _, r, p in sorted(candidates):
        if p not in used_p and r not in used_r:
            used_p.add(p)
            used_r.add(r)
            matches.append((p, r))
    return matches


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.uint8])
@pytest.mark.parametrize("threshold", [0.1, 0.3, 1e-9])
def test_overlapping_pairs_and_detection_equal_straightforward(dtype: type, threshold: float) -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        shape = tuple(int(v) for v in rng.integers(3, 20, 3))
        ref = (rng.integers(0, 6, shape) * (rng.random(shape) < 0.3)).astype(dtype)
        pred = (rng.integers(0, 9, shape) * (rng.random(shape) < 0.3)).astype(dtype)
        pred[..., 0] = 8  # label 8 exists whatever the overlap
        assert overlapping_pairs(pred, ref) == straightforward_pairs(pred, ref)
        expected = straightforward_matches(pred, ref, threshold)
        got_matches = match_nodes(pred, ref, iou_threshold=threshold)
        assert [(m.pred_label, m.ref_label) for m in got_matches] == expected
        short = {r: float(rng.choice([5.0, 12.0])) for r in range(1, 6)}
        got = detect(pred, ref, ref_short_axis_mm=short, fully_annotated=True, iou_threshold=threshold)
        pathological = {r for r, s in short.items() if s >= 10.0}
        hit = {r for _, r in expected}
        assert got.n_reference_short_axis_ge_10mm == len(pathological)
        assert got.n_detected_short_axis_ge_10mm == len(pathological & hit)
        present = {int(v) for v in np.unique(pred) if v > 0}
        assert got.n_false_positive_nodes == len(present) - len(expected)


def test_no_overlap_at_all() -> None:
    pred, ref = np.zeros((2, 3, 4), np.uint16), np.zeros((2, 3, 4), np.uint16)
    pred[0, 0, 0], ref[1, 2, 3] = 1, 1
    assert overlapping_pairs(pred, ref) == set()
    d = detect(pred, ref, ref_short_axis_mm={1: 12.0}, fully_annotated=True)
    assert d.n_detected_short_axis_ge_10mm == 0 and d.n_false_positive_nodes == 1


def test_label_shapes_must_agree() -> None:
    with pytest.raises(ScoreError, match="label shapes differ"):
        detect(
            np.zeros((2, 3, 4), np.uint16),
            np.zeros((2, 3, 5), np.uint16),
            ref_short_axis_mm={},
            fully_annotated=False,
        )

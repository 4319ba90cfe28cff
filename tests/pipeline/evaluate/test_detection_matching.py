"""One-to-one node matching by IoU: what one blob, copies, shifts and split nodes score."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluate.detection import detect, match_nodes
from pipeline.geometry import Geometry
from pipeline.measure.components import label_nodes

SHAPE = (24, 40, 90)
CENTRES = ((12, 20, 15), (12, 20, 45), (12, 20, 75))  # three nodes in a row, [z, y, x]
RADIUS = 6
GEOMETRY = Geometry(SHAPE, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
ALL_PATHOLOGICAL = {1: 12.0, 2: 12.0, 3: 12.0}


def _spheres(centres=CENTRES, radius: float = RADIUS) -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    mask = np.zeros(SHAPE, dtype=bool)
    for cz, cy, cx in centres:
        mask |= (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
    return mask


def _detect(pred: np.ndarray, ref: np.ndarray, **kw):  # type: ignore[no-untyped-def]
    return detect(
        label_nodes(pred, GEOMETRY),
        label_nodes(ref, GEOMETRY),
        ref_short_axis_mm=ALL_PATHOLOGICAL,
        fully_annotated=True,
        **kw,
    )


def test_one_blob_over_three_nodes_detects_at_most_one() -> None:
    ref = _spheres()
    box = np.zeros(SHAPE, dtype=bool)
    box[4:21, 12:29, 7:84] = True  # one box around all three nodes
    d = _detect(box, ref)
    assert d.n_detected_short_axis_ge_10mm == 0  # each node is under a tenth of the box
    assert d.n_false_positive_nodes == 1
    bridged = ref.copy()
    bridged[12, 20, 15:76] = True  # the three nodes joined by a one-voxel line: one predicted node
    d = _detect(bridged, ref)
    assert d.n_detected_short_axis_ge_10mm == 1  # IoU about 1/3 with each, but it matches one
    assert d.n_false_positive_nodes == 0
    assert d.sensitivity_short_axis_ge_10mm == pytest.approx(1 / 3)


def test_exact_copy_and_shifted_copy_detect_all_without_false_positives() -> None:
    ref = _spheres()
    for pred in (ref, np.roll(ref, 2, axis=2), np.roll(ref, (2, -2), axis=(0, 1))):
        d = _detect(pred, ref)
        assert d.n_detected_short_axis_ge_10mm == 3
        assert d.n_false_positive_nodes == 0
        assert len(d.matches) == 3


def test_split_node_is_one_hit_and_one_false_positive() -> None:
    ref = _spheres(centres=CENTRES[:1])
    pred = ref.copy()
    pred[:, :, CENTRES[0][2]] = False  # cut in two halves by a one-voxel gap
    pred_labels = label_nodes(pred, GEOMETRY)
    assert pred_labels.max() == 2
    d = detect(pred_labels, label_nodes(ref, GEOMETRY), ref_short_axis_mm={1: 12.0}, fully_annotated=True)
    assert d.n_detected_short_axis_ge_10mm == 1
    assert d.n_false_positive_nodes == 1
    assert 0.35 < d.matches[0].iou < 0.5  # a half, less the gap


def test_threshold_decides_a_shifted_match() -> None:
    ref = _spheres(centres=CENTRES[:1])
    pred = np.roll(ref, 4, axis=2)
    iou = np.count_nonzero(ref & pred) / np.count_nonzero(ref | pred)
    assert 0.3 < iou < 0.6
    ref_labels, pred_labels = label_nodes(ref, GEOMETRY), label_nodes(pred, GEOMETRY)
    assert [m.iou for m in match_nodes(pred_labels, ref_labels, iou_threshold=iou)] == [pytest.approx(iou)]
    assert match_nodes(pred_labels, ref_labels, iou_threshold=iou + 1e-6) == []
    d = detect(pred_labels, ref_labels, ref_short_axis_mm={1: 12.0}, fully_annotated=True, iou_threshold=0.6)
    assert d.n_detected_short_axis_ge_10mm == 0 and d.n_false_positive_nodes == 1
    assert d.columns()["detection_iou_threshold"] == 0.6


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_threshold_out_of_range_is_refused(bad: float) -> None:
    labels = np.zeros((2, 2, 2), np.uint16)
    with pytest.raises(ValueError, match=r"IoU threshold .* is not in \(0, 1\]"):
        match_nodes(labels, labels, iou_threshold=bad)

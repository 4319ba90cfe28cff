"""Training labels: full cases 0/1, partial cases 0/1/ignore by the known-background rule."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training.labels import LabelCounts, training_labels
from pipeline.training.settings import BACKGROUND, IGNORE, LYMPH_NODE, BackgroundRule, KnownBackground

HU = KnownBackground()


def _chest() -> tuple[np.ndarray, np.ndarray, dict[str, tuple]]:
    """A small CT: air around a body of soft tissue with a lung, a bone and a node, and a table
    below the body that does not touch it. Returns HU, the node mask and where each part is."""
    hu = np.full((6, 40, 40), -1000, dtype=np.int16)
    where = {
        "body": (slice(None), slice(5, 30), slice(5, 35)),
        "lung": (slice(1, 5), slice(8, 16), slice(8, 16)),
        "bone": (slice(1, 5), slice(22, 27), slice(18, 22)),
        "node": (slice(2, 4), slice(18, 22), slice(24, 28)),
        "table": (slice(None), slice(34, 37), slice(2, 38)),
    }
    hu[where["body"]] = 40
    hu[where["lung"]] = -850
    hu[where["bone"]] = 900
    hu[where["table"]] = 100
    mask = np.zeros(hu.shape, dtype=bool)
    mask[where["node"]] = True
    return hu, mask, where


def test_full_cases_are_the_seg_and_background() -> None:
    hu, mask, _ = _chest()
    labels = training_labels(mask, hu, annotation="full", background=HU)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels == LYMPH_NODE, mask)
    assert set(np.unique(labels)) == {BACKGROUND, LYMPH_NODE}


def test_partial_hu_rule_marks_air_lung_bone_and_outside_the_body() -> None:
    hu, mask, where = _chest()
    labels = training_labels(mask, hu, annotation="partial", background=HU)
    np.testing.assert_array_equal(labels == LYMPH_NODE, mask)
    assert (labels[where["lung"]] == BACKGROUND).all()
    assert (labels[where["bone"]] == BACKGROUND).all()
    assert (labels[where["table"]] == BACKGROUND).all()  # soft-tissue HU, but not the body
    assert (labels[0, 0, 0], labels[0, 39, 39]) == (BACKGROUND, BACKGROUND)  # air
    soft_tissue = np.zeros(hu.shape, dtype=bool)
    soft_tissue[where["body"]] = True
    soft_tissue &= (hu == 40) & ~mask
    assert soft_tissue.any() and (labels[soft_tissue] == IGNORE).all()
    assert set(np.unique(labels)) == {BACKGROUND, LYMPH_NODE, IGNORE}


def test_the_expert_wins_over_the_rule() -> None:
    hu, mask, where = _chest()
    hu[where["node"]] = -900  # a node drawn over air-dense voxels stays a node
    labels = training_labels(mask, hu, annotation="partial", background=HU)
    np.testing.assert_array_equal(labels == LYMPH_NODE, mask)


def test_thresholds_are_strict() -> None:
    hu, mask, where = _chest()
    hu[0, 10, 10] = -500  # exactly at the air threshold: tissue-dense, body, not known
    hu[0, 12, 12] = 700  # exactly at the bone threshold: not bone
    labels = training_labels(mask, hu, annotation="partial", background=HU)
    assert labels[0, 10, 10] == IGNORE and labels[0, 12, 12] == IGNORE
    hu[0, 10, 10], hu[0, 12, 12] = -501, 701
    labels = training_labels(mask, hu, annotation="partial", background=HU)
    assert labels[0, 10, 10] == BACKGROUND and labels[0, 12, 12] == BACKGROUND


def test_thresholds_follow_the_settings() -> None:
    hu, mask, where = _chest()
    no_bone = KnownBackground(bone_above_hu=5000)
    labels = training_labels(mask, hu, annotation="partial", background=no_bone)
    assert (labels[where["bone"]] == IGNORE).all()


def test_none_rule_keeps_only_the_nodes() -> None:
    hu, mask, _ = _chest()
    labels = training_labels(mask, hu, annotation="partial", background=KnownBackground(BackgroundRule.NONE))
    np.testing.assert_array_equal(labels == LYMPH_NODE, mask)
    np.testing.assert_array_equal(labels == IGNORE, ~mask)


def test_an_annotation_that_does_not_say_is_partial() -> None:
    hu, mask, _ = _chest()
    labels = training_labels(mask, hu, annotation=None, background=HU)
    assert IGNORE in labels


def test_more_components_than_uint16_holds() -> None:
    """70,000 isolated specks of soft tissue beside the body, four voxels apart (two pooled voxels):
    the components no longer fit uint16, and every speck is still outside the body."""
    hu = np.full((168, 168, 168), -1000, dtype=np.int16)
    hu[::4, ::4, ::4] = 40  # 42^3 = 74,088 specks, none touching another even when pooled
    hu[:, :, 164:] = 40  # the body: the largest component (with the specks it touches)
    mask = np.zeros(hu.shape, dtype=bool)
    labels = training_labels(mask, hu, annotation="partial", background=HU)
    assert (labels[:, :, 164:] == IGNORE).all()
    assert (labels[::4, ::4, :160:4] == BACKGROUND).all()


def test_what_is_near_or_joined_to_the_body_is_body() -> None:
    """The body is found on a pooled grid: that may join an object within two voxels of the body to
    it (then ignored, not background), never split the body; a thin bridge joins as at full size."""
    hu = np.full((8, 40, 40), -1000, dtype=np.int16)
    hu[:, 4:20, 4:20] = 40  # the body
    hu[:, 21:23, 4:8] = 40  # one voxel of air between it and the body
    hu[:, 30:34, 4:8] = 40  # far from the body
    hu[:, 10, 20:30] = 40  # a one-voxel bridge from the body ...
    hu[:, 8:13, 30:36] = 40  # ... to a blob
    labels = training_labels(np.zeros(hu.shape, dtype=bool), hu, annotation="partial", background=HU)
    assert (labels[:, 4:20, 4:20] == IGNORE).all()
    assert (labels[:, 21:23, 4:8] == IGNORE).all()  # near the body: counted with it
    assert (labels[:, 30:34, 4:8] == BACKGROUND).all()  # outside the body
    assert (labels[:, 8:13, 30:36] == IGNORE).all() and (labels[:, 10, 20:30] == IGNORE).all()


def test_label_counts() -> None:
    hu, mask, _ = _chest()
    labels = training_labels(mask, hu, annotation="partial", background=HU)
    counts = LabelCounts.of(labels)
    assert (counts.background, counts.lymph_node, counts.ignore) == tuple(
        int((labels == v).sum()) for v in (BACKGROUND, LYMPH_NODE, IGNORE)
    )
    assert counts.lymph_node == mask.sum()


def test_rejections() -> None:
    hu, mask, _ = _chest()
    with pytest.raises(ValueError, match=r"reference mask shape \(6, 40, 39\) differs from the CT's"):
        training_labels(mask[:, :, 1:], hu, annotation="full", background=HU)
    with pytest.raises(ValueError, match="air below 100 HU must be lower than bone above 50 HU"):
        KnownBackground(air_below_hu=100, bone_above_hu=50)
    with pytest.raises(ValueError, match="'lungs' is not a valid BackgroundRule"):
        KnownBackground("lungs")  # type: ignore[arg-type]

"""The export's settings and fixed values, in a module without numpy, so that ``lnq export-training
--help`` and the launcher's option checks import nothing heavy."""

from __future__ import annotations

import enum
from dataclasses import dataclass

BACKGROUND = 0
LYMPH_NODE = 1
IGNORE = 2
"""The label values: nnU-Net wants them consecutive from 0, with the ignore label the highest."""

FILE_ENDING = ".nii.gz"
DEFAULT_DATASET_ID = 501
DEFAULT_DATASET_NAME = "LNQ"
TEST_ANNOTATION_CHOICES = ("full", "none")
"""``--test-annotation``: hold the fully annotated cases out as the test set, or test on none."""


class BackgroundRule(str, enum.Enum):
    """How partially annotated cases get known background (``--partial-background``; see
    :mod:`pipeline.training.labels`)."""

    HU = "hu"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class KnownBackground:
    """The known-background rule of partial cases and its HU thresholds."""

    rule: BackgroundRule = BackgroundRule.HU
    air_below_hu: float = -500.0
    bone_above_hu: float = 700.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", BackgroundRule(self.rule))
        if not self.air_below_hu < self.bone_above_hu:
            raise ValueError(
                f"known background: air below {self.air_below_hu:g} HU must be lower than "
                f"bone above {self.bone_above_hu:g} HU"
            )

    def describe(self) -> dict[str, object]:
        """The rule as ``dataset.json`` records it."""
        if self.rule == BackgroundRule.NONE:
            return {"rule": self.rule.value}
        return {
            "rule": self.rule.value,
            "air_below_hu": self.air_below_hu,
            "bone_above_hu": self.bone_above_hu,
            "outside_body": "voxels >= air_below_hu outside the largest 26-connected component of them "
            "(on a grid pooled 2 x 2 x 2)",
        }


def is_partial(annotation: str | None) -> bool:
    """Whether a case's SEG may leave nodes unlabelled: ``partial``, and a cohort row that does not
    say (a SEG that does not claim to be complete is not taken for complete)."""
    return annotation != "full"

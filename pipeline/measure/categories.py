"""RECIST 1.1 lymph node categories by short axis."""

from __future__ import annotations

import enum

TARGET_SHORT_AXIS_MM = 15.0
PATHOLOGICAL_SHORT_AXIS_MM = 10.0


class RecistCategory(str, enum.Enum):
    """'target' >= 15 mm, 'non_target' 10 to < 15 mm, 'normal' < 10 mm (short axis)."""

    TARGET = "target"
    NON_TARGET = "non_target"
    NORMAL = "normal"


def recist_category(short_axis_mm: float) -> RecistCategory:
    if short_axis_mm >= TARGET_SHORT_AXIS_MM:
        return RecistCategory.TARGET
    if short_axis_mm >= PATHOLOGICAL_SHORT_AXIS_MM:
        return RecistCategory.NON_TARGET
    return RecistCategory.NORMAL


def is_pathological(short_axis_mm: float) -> bool:
    """Short axis >= 10 mm: a pathological node (target or non-target)."""
    return short_axis_mm >= PATHOLOGICAL_SHORT_AXIS_MM

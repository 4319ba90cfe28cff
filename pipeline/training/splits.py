"""Patient-level cross-validation folds in nnU-Net's ``splits_final.json`` format.

nnU-Net splits its training cases into five folds itself, case by case. Cases of one patient in
both the training and the validation set of a fold would let the validation score flatter the
model, so folds here are drawn over patients: every case of a patient is in the same fold. The
draw is seeded (nnU-Net's own seed, 12345), so the same cohort gives the same folds.

nnU-Net reads the folds from ``nnUNet_preprocessed/Dataset<N>_<NAME>/splits_final.json``;
nnunetv2's planner (2.8) copies the file there from the raw dataset folder when it plans.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

N_FOLDS = 5
SEED = 12345


def patient_folds(
    cases: Iterable[tuple[str, str]], *, n_folds: int = N_FOLDS, seed: int = SEED
) -> list[dict[str, list[str]]]:
    """``[{"train": [...], "val": [...]}, ...]`` over ``(case_id, patient)`` pairs: patients shuffled
    with ``seed`` and dealt into ``min(n_folds, patients)`` folds; each case is validated in
    exactly one fold. Fewer than two patients give no folds (nothing to validate against)."""
    by_patient: dict[str, list[str]] = defaultdict(list)
    for case_id, patient in cases:
        by_patient[patient].append(case_id)
    patients = sorted(by_patient)
    if len(patients) < 2:
        return []
    order = np.random.RandomState(seed).permutation(len(patients))
    groups = np.array_split(np.asarray(patients, dtype=object)[order], min(n_folds, len(patients)))
    every = sorted(case for ids in by_patient.values() for case in ids)
    folds = []
    for group in groups:
        val = sorted(case for patient in group for case in by_patient[str(patient)])
        held = set(val)
        folds.append({"train": [case for case in every if case not in held], "val": val})
    return folds


def fold_of(folds: list[dict[str, list[str]]]) -> dict[str, int]:
    """Case -> the fold whose validation set holds it."""
    return {case: i for i, fold in enumerate(folds) for case in fold["val"]}

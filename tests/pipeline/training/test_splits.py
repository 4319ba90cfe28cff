"""Patient-level folds in nnU-Net's splits_final.json format."""

from __future__ import annotations

import random

from pipeline.training.splits import fold_of, patient_folds


def _cases() -> list[tuple[str, str]]:
    cases = [(f"c{i:02d}", f"p{i:02d}") for i in range(12)]
    cases += [("c12", "p03"), ("c13", "p03"), ("c14", "p07")]  # patients with several series
    return cases


def test_every_case_is_validated_once_and_patients_stay_together() -> None:
    cases = _cases()
    folds = patient_folds(cases)
    assert len(folds) == 5
    ids = sorted(case for case, _ in cases)
    seen = sorted(case for fold in folds for case in fold["val"])
    assert seen == ids  # each case in exactly one validation set
    patient = dict(cases)
    for fold in folds:
        assert sorted(fold["train"] + fold["val"]) == ids
        assert not set(fold["train"]) & set(fold["val"])
        assert not {patient[c] for c in fold["train"]} & {patient[c] for c in fold["val"]}
        assert fold["train"] == sorted(fold["train"]) and fold["val"] == sorted(fold["val"])
    by_fold = fold_of(folds)
    assert by_fold["c03"] == by_fold["c12"] == by_fold["c13"]
    assert by_fold["c07"] == by_fold["c14"]


def test_the_same_cohort_gives_the_same_folds_in_any_order() -> None:
    cases = _cases()
    shuffled = list(cases)
    random.Random(4).shuffle(shuffled)
    assert patient_folds(shuffled) == patient_folds(cases)
    assert patient_folds(cases, seed=1) != patient_folds(cases)  # the seed decides


def test_few_patients() -> None:
    folds = patient_folds([("a", "p1"), ("b", "p2"), ("c", "p3")])
    assert len(folds) == 3  # one fold per patient when there are fewer than five
    assert sorted(fold["val"] for fold in folds) == [["a"], ["b"], ["c"]]
    assert patient_folds([("a", "p1"), ("b", "p1")]) == []  # one patient: nothing to validate on
    assert patient_folds([]) == []

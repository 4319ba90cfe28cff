"""Case names, splits and the case table."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.training.cases import CASES_SCHEMA, case_names, case_table, plan_cases
from pipeline.training.dataset import Split


def _row(uid: str, patient: str | None, annotation: str | None = "partial") -> dict:
    return {"ct_series_instance_uid": uid, "patient_id": patient, "annotation": annotation}


def test_safe_patient_ids_name_their_cases() -> None:
    assert case_names([_row("1.1", "case_0002"), _row("1.2", "case_0003")]) == {
        "1.1": "case_0002",
        "1.2": "case_0003",
    }


def test_unsafe_or_missing_patient_ids_never_become_paths() -> None:
    names = case_names([_row("1.1", "../../etc"), _row("1.2", "a b"), _row("1.3", None), _row("1.4", "")])
    assert len(set(names.values())) == 4
    for name in names.values():
        assert name.startswith("case_") and all(c.isalnum() or c == "_" for c in name)


def test_several_series_of_a_patient_and_stability() -> None:
    rows = [_row("1.1", "case_0002"), _row("1.2", "case_0002"), _row("1.3", "case_0004")]
    names = case_names(rows)
    assert names["1.3"] == "case_0004"
    assert names["1.1"].startswith("case_0002_") and names["1.2"].startswith("case_0002_")
    assert names["1.1"] != names["1.2"]
    assert case_names(list(reversed(rows))) == names  # order does not matter
    assert case_names(rows[1:2] + rows[:1]) == {k: names[k] for k in ("1.1", "1.2")}
    assert case_names(rows[2:])["1.3"] == "case_0004"  # other patients do not matter


def test_splits_by_test_annotation() -> None:
    rows = [_row("1.1", "a", "full"), _row("1.2", "b", "partial"), _row("1.3", "c", None)]
    held_out = {p.ct_series_instance_uid: p for p in plan_cases(rows, test_annotation="full")}
    assert [held_out[u].split for u in ("1.1", "1.2", "1.3")] == [Split.TEST, Split.TRAIN, Split.TRAIN]
    assert [held_out[u].partial for u in ("1.1", "1.2", "1.3")] == [False, True, True]
    assert {p.split for p in plan_cases(rows, test_annotation="none")} == {Split.TRAIN}
    assert held_out["1.2"].patient == "b"
    with pytest.raises(ValueError, match="test annotation 'partial' is not one of"):
        plan_cases(rows, test_annotation="partial")


def test_patients_without_an_id_are_their_own_series() -> None:
    (planned,) = plan_cases([_row("1.9", None)], test_annotation="full")
    assert planned.patient == "series:1.9"


def test_case_table_is_sorted_and_checked() -> None:
    row = dict.fromkeys(CASES_SCHEMA.names)
    row.update(
        case_id="b", status="ok", ct_series_instance_uid="1.2", processed_at=dt.datetime.now(dt.timezone.utc)
    )
    other = dict(row, case_id="a", ct_series_instance_uid="1.1")
    table = case_table([row, other])
    assert table.schema == CASES_SCHEMA
    assert table.column("case_id").to_pylist() == ["a", "b"]
    with pytest.raises(KeyError, match=r"missing \['fold'\]"):
        case_table([{k: v for k, v in row.items() if k != "fold"}])

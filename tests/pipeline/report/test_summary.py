"""The report's figures come from the tables: counts, failures, scores, the series table's order."""

from __future__ import annotations

import math
import statistics

import pytest

from pipeline.report import summarise
from tests.pipeline.report.synthetic import random_tables


def test_counts_failures_and_rate_from_wall_time() -> None:
    series, _, errors = random_tables(40, failed_every=8)
    data = summarise(series, errors, run_info={"wall_s": 120.0, "started_at": "t0"})
    o = data.overview
    assert (o.n_series, o.n_ok, o.n_failed) == (40, 35, 5)
    assert o.series_per_hour == pytest.approx(40 / 120.0 * 3600.0)
    assert o.rate_basis == "wall time" and o.started_at == "t0" and o.finished_at is None
    assert sum(n for _, n in data.failures_per_stage) == 5 == len(data.failures)
    failed = {r["ct_series_instance_uid"] for r in series.to_pylist() if r["status"] == "error"}
    assert {f["ct_series_instance_uid"] for f in data.failures} == failed
    fetch = [s for s in o.stages if s.stage == "fetch"][0]
    values = [r["fetch_s"] for r in series.to_pylist() if r["fetch_s"] is not None]
    assert fetch.n_series == len(values) and fetch.total_s == pytest.approx(sum(values))
    assert "inference" not in {s.stage for s in o.stages}  # reference mode never ran it


def test_rate_without_wall_time_uses_series_seconds() -> None:
    series, _, errors = random_tables(10, failed_every=0)
    o = summarise(series, errors).overview
    total = sum(r["total_s"] for r in series.to_pylist())
    assert o.series_per_hour == pytest.approx(10 / total * 3600.0) and "one worker" in o.rate_basis


def test_reference_mode_has_no_scores() -> None:
    series, _, errors = random_tables(10)
    assert summarise(series, errors).scores is None


def test_model_scores_median_mean_sensitivity_and_false_positives() -> None:
    series, _, errors = random_tables(60, model="torchscript:m.pt", seed=4)
    rows = [r for r in series.to_pylist() if r["status"] == "ok"]
    scores = summarise(series, errors).scores
    assert scores is not None and scores.n_scored == len(rows)
    dsc = sorted(r["dsc"] for r in rows)
    assert scores.aggregate["dsc_mean"] == pytest.approx(sum(dsc) / len(dsc))
    assert scores.aggregate["n_assd_nan"] == sum(r["assd_mm"] is None for r in rows)
    n_ref = sum(r["n_reference_nodes_short_axis_ge_10mm"] for r in rows)
    n_hit = sum(r["n_reference_nodes_ge_10mm_detected"] for r in rows)
    assert scores.sensitivity_ge_10mm == pytest.approx(n_hit / n_ref)
    full = [r for r in rows if r["annotation"] == "full"]
    assert scores.n_full_patients == len(full)
    assert scores.false_positives_per_full_patient == pytest.approx(
        sum(r["false_positive_nodes"] for r in full) / len(full)
    )
    bias = [r["prediction_volume_ml"] - r["reference_volume_ml"] for r in rows]
    assert scores.volume_bias_ml_mean == pytest.approx(statistics.mean(bias))
    assert scores.volume_bias_ml_median == pytest.approx(statistics.median(bias))
    assert scores.iou_thresholds == (0.1,)


def test_series_table_worst_dsc_first_and_qc_links_only_where_pictures_exist() -> None:
    series, _, errors = random_tables(30, model="nnunet:/m", failed_every=10, seed=2)
    with_picture = {r["ct_series_instance_uid"] for r in series.to_pylist()[:5]}
    rows = summarise(series, errors, qc_uids=with_picture).series_rows
    dsc = [r["dsc"] for r in rows if r["dsc"] is not None]
    assert dsc == sorted(dsc) and all(r["dsc"] is None for r in rows[len(dsc) :])
    linked = {r["ct_series_instance_uid"] for r in rows if r["qc_href"]}
    assert linked == with_picture
    assert all(r["qc_href"] == f"../qc/{r['ct_series_instance_uid']}.png" for r in rows if r["qc_href"])
    assert all(r["error"] for r in rows if r["status"] == "error")
    assert not any(math.isnan(r["dsc"]) for r in rows if r["dsc"] is not None)


def test_series_table_says_which_series_have_flagged_nodes() -> None:
    series, nodes, errors = random_tables(60, model="torchscript:m.pt", seed=4)
    rows = {r["ct_series_instance_uid"]: r for r in summarise(series, errors, nodes=nodes).series_rows}
    flags: dict[str, list[str]] = {}
    for n in nodes.to_pylist():
        flags.setdefault(n["ct_series_instance_uid"], []).append(n["quality_flag"])
    assert any(rows[u]["flagged"] for u in flags)
    for uid, row in rows.items():
        specks, implausible = flags.get(uid, []).count("speck"), flags.get(uid, []).count("implausible")
        expected = ([f"{implausible} implausible"] if implausible else []) + (
            [f"{specks} speck{'s' if specks != 1 else ''}"] if specks else []
        )
        assert row["flagged"] == (", ".join(expected) or None), uid

"""What the run report says, computed from the three output tables (no drawing, no HTML here)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.enums import REFERENCE_MODEL, TIMED_STAGES, Annotation, SeriesStatus
from pipeline.evaluate.aggregate import aggregate_scores
from pipeline.measure.quality import NodeQuality
from pipeline.outputs.schemas import stage_column


@dataclass(frozen=True)
class StageTime:
    stage: str
    n_series: int
    total_s: float
    mean_s: float


@dataclass(frozen=True)
class RunOverview:
    """The run at a glance. ``series_per_hour`` is from wall time when the run gave it, else from
    the series' own seconds (one worker's rate), as ``rate_basis`` says."""

    n_series: int
    n_ok: int
    n_failed: int
    n_patients: int
    models: tuple[str, ...]
    pipeline_versions: tuple[str, ...]
    started_at: str | None
    finished_at: str | None
    wall_s: float | None
    series_seconds: float
    series_per_hour: float | None
    rate_basis: str
    stages: tuple[StageTime, ...]
    n_resumed: int = 0
    """Series a resumed run found done already: not in its wall time, nor in its rate."""


@dataclass(frozen=True)
class ModelScores:
    """LNQ2023 aggregates (mean and median) and node detection over the scored series."""

    n_scored: int
    aggregate: dict[str, float | int | None]
    n_reference_ge_10mm: int
    n_detected_ge_10mm: int
    sensitivity_ge_10mm: float | None
    n_full_patients: int
    false_positives: int
    false_positives_per_full_patient: float | None
    volume_bias_ml_mean: float | None = None
    """Mean over scored series of predicted minus reference volume (mL): over- or under-segmentation
    that DSC and sensitivity do not show (a 980 mL blob over 8 nodes detects them all)."""
    volume_bias_ml_median: float | None = None
    iou_thresholds: tuple[float, ...] = ()
    """The detection IoU thresholds the series were scored with (one, in a run)."""


@dataclass(frozen=True)
class ReportData:
    overview: RunOverview
    failures: tuple[dict[str, Any], ...]
    failures_per_stage: tuple[tuple[str, int], ...]
    series_rows: tuple[dict[str, Any], ...]
    scores: ModelScores | None


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def has_model(series_rows: list[dict[str, Any]]) -> bool:
    return any(r["model"] != REFERENCE_MODEL for r in series_rows)


def summarise(
    series: pa.Table,
    errors: pa.Table,
    *,
    run_info: Mapping[str, Any] | None = None,
    qc_uids: Collection[str] = (),
    nodes: pa.Table | None = None,
) -> ReportData:
    """The report's figures and tables. ``qc_uids``: series whose QC picture exists; ``nodes``: the
    nodes table, for each series' count of flagged nodes."""
    rows = series.to_pylist()
    error_rows = errors.to_pylist()
    overview = _overview(rows, run_info or {})
    by_uid = {r["ct_series_instance_uid"]: r for r in rows}
    failures = tuple(
        {
            "ct_series_instance_uid": e["ct_series_instance_uid"],
            "patient_id": (by_uid.get(e["ct_series_instance_uid"]) or {}).get("patient_id"),
            "stage": e["stage"],
            "error_type": e["error_type"],
            "message": e["message"],
        }
        for e in sorted(error_rows, key=lambda e: (e["stage"], e["ct_series_instance_uid"], e["message"]))
    )
    per_stage = Counter(e["stage"] for e in error_rows)
    first_error: dict[str, dict[str, Any]] = {}
    for e in failures:
        first_error.setdefault(e["ct_series_instance_uid"], e)
    return ReportData(
        overview=overview,
        failures=failures,
        failures_per_stage=tuple(sorted(per_stage.items(), key=lambda kv: (-kv[1], kv[0]))),
        series_rows=tuple(_series_rows(rows, first_error, set(qc_uids), _flagged(nodes))),
        scores=_scores(rows) if has_model(rows) else None,
    )


def _overview(rows: list[dict[str, Any]], run_info: Mapping[str, Any]) -> RunOverview:
    n_ok = sum(r["status"] == SeriesStatus.OK.value for r in rows)
    series_seconds = sum(_finite(r["total_s"]) or 0.0 for r in rows)
    wall_s = _finite(run_info.get("wall_s"))
    n_resumed = int(run_info.get("n_resumed") or 0)
    if wall_s:
        processed = run_info.get("n_processed")
        rate: float | None = (len(rows) if processed is None else int(processed)) / wall_s * 3600.0
        basis = "wall time" if not n_resumed else f"wall time; {n_resumed} resumed series left out"
    else:
        rate = len(rows) / series_seconds * 3600.0 if series_seconds else None
        basis = "sum of series seconds (one worker)"
    stages = []
    for stage in TIMED_STAGES:
        values = [v for r in rows if (v := _finite(r.get(stage_column(stage)))) is not None]
        if values:
            stages.append(StageTime(stage.value, len(values), sum(values), sum(values) / len(values)))
    return RunOverview(
        n_series=len(rows),
        n_ok=n_ok,
        n_failed=len(rows) - n_ok,
        n_patients=len({r["patient_id"] for r in rows}),
        models=tuple(sorted({r["model"] for r in rows})),
        pipeline_versions=tuple(sorted({r["pipeline_version"] for r in rows})),
        started_at=_text(run_info.get("started_at")),
        finished_at=_text(run_info.get("finished_at")),
        wall_s=wall_s,
        series_seconds=series_seconds,
        series_per_hour=rate,
        rate_basis=basis,
        stages=tuple(stages),
        n_resumed=n_resumed,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _flagged(nodes: pa.Table | None) -> dict[str, str]:
    """Per series, its flagged nodes in words ('1 implausible, 12 specks'); series without any absent."""
    if nodes is None or "quality_flag" not in nodes.column_names:
        return {}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    uids = nodes.column("ct_series_instance_uid").to_pylist()
    for uid, flag in zip(uids, nodes.column("quality_flag").to_pylist(), strict=True):
        counts[uid][flag] += 1

    def words(c: Counter[str]) -> str:
        implausible, specks = c[NodeQuality.IMPLAUSIBLE.value], c[NodeQuality.SPECK.value]
        parts = [f"{implausible} implausible"] if implausible else []
        parts += [f"{specks} speck{'s' if specks != 1 else ''}"] if specks else []
        return ", ".join(parts)

    return {uid: text for uid, c in counts.items() if (text := words(c))}


def _series_rows(
    rows: list[dict[str, Any]],
    first_error: Mapping[str, dict[str, Any]],
    qc_uids: set[str],
    flagged: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Rows for the series table, worst DSC first (series without a DSC after, by UID)."""
    out = []
    for r in rows:
        uid = r["ct_series_instance_uid"]
        error = first_error.get(uid)
        out.append(
            {
                "ct_series_instance_uid": uid,
                "patient_id": r["patient_id"],
                "annotation": r["annotation"],
                "status": r["status"],
                "n_reference_nodes": r["n_reference_nodes"],
                "n_prediction_nodes": r["n_prediction_nodes"],
                "flagged": flagged.get(uid),
                "reference_volume_ml": _finite(r["reference_volume_ml"]),
                "dsc": _finite(r["dsc"]),
                "assd_mm": _finite(r["assd_mm"]),
                "total_s": _finite(r["total_s"]),
                "error": f"{error['stage']}: {error['error_type']}" if error else None,
                "qc_href": f"../qc/{uid}.png" if uid in qc_uids else None,
            }
        )
    return sorted(
        out,
        key=lambda r: (r["dsc"] is None, r["dsc"] or 0.0, r["status"] == "ok", r["ct_series_instance_uid"]),
    )


def _scores(rows: list[dict[str, Any]]) -> ModelScores:
    scored = [r for r in rows if r["status"] == SeriesStatus.OK.value and r["dsc"] is not None]
    aggregate = aggregate_scores(
        [float(r["dsc"]) for r in scored],
        [math.nan if r["assd_mm"] is None else float(r["assd_mm"]) for r in scored],
    )
    ok = [r for r in rows if r["status"] == SeriesStatus.OK.value]
    n_ref = sum(r["n_reference_nodes_short_axis_ge_10mm"] or 0 for r in ok)
    n_detected = sum(r["n_reference_nodes_ge_10mm_detected"] or 0 for r in ok)
    fp_by_patient: dict[str, int] = defaultdict(int)
    for r in ok:
        if r["annotation"] == Annotation.FULL and r["false_positive_nodes"] is not None:
            fp_by_patient[r["patient_id"]] += int(r["false_positive_nodes"])
    fps = sum(fp_by_patient.values())
    bias = [
        float(r["prediction_volume_ml"]) - float(r["reference_volume_ml"])
        for r in scored
        if r["prediction_volume_ml"] is not None and r["reference_volume_ml"] is not None
    ]
    return ModelScores(
        n_scored=len(scored),
        aggregate=aggregate,
        n_reference_ge_10mm=n_ref,
        n_detected_ge_10mm=n_detected,
        sensitivity_ge_10mm=n_detected / n_ref if n_ref else None,
        n_full_patients=len(fp_by_patient),
        false_positives=fps,
        false_positives_per_full_patient=fps / len(fp_by_patient) if fp_by_patient else None,
        volume_bias_ml_mean=float(np.mean(bias)) if bias else None,
        volume_bias_ml_median=float(np.median(bias)) if bias else None,
        iou_thresholds=tuple(
            sorted({float(r["detection_iou_threshold"]) for r in scored if r["detection_iou_threshold"]})
        ),
    )


def false_positives_per_full_patient(rows: list[dict[str, Any]]) -> list[int]:
    """False-positive node counts per fully annotated patient (ok series), for the histogram."""
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        if (
            r["status"] == "ok"
            and r["annotation"] == Annotation.FULL
            and r["false_positive_nodes"] is not None
        ):
            counts[r["patient_id"]] += int(r["false_positive_nodes"])
    return [counts[p] for p in sorted(counts)]

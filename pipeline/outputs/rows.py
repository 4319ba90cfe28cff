"""Table rows from a :class:`~pipeline.outcome.SeriesOutcome`, the one place that writes columns.

Every row starts from its schema's column names (``pipeline/outputs/schemas.py``)
and is checked against the schema at the end, so a column is declared once and
cannot be forgotten here or invented elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.enums import NodeSource
from pipeline.errors import SeriesError
from pipeline.measure.nodes import NodeMeasurement
from pipeline.outcome import SeriesOutcome, SourceNodes, finite_or_none
from pipeline.outputs.schemas import (
    AXIS_ENDS,
    BURDEN_COLUMNS,
    ERRORS_SCHEMA,
    NODES_SCHEMA,
    SERIES_SCHEMA,
    burden_column,
    conform,
    stage_column,
)

_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class OutcomeRows:
    """One series' rows for the three tables."""

    series: dict[str, Any]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def outcome_rows(outcome: SeriesOutcome) -> OutcomeRows:
    return OutcomeRows(
        series=series_row(outcome),
        nodes=[]
        if outcome.errors
        else [row for entry in outcome.sources for row in _source_rows(outcome, entry)],
        errors=[error_row(outcome, e) for e in outcome.errors],
    )


def _source_rows(outcome: SeriesOutcome, entry: SourceNodes) -> list[dict[str, Any]]:
    tracking = entry.tracking_uids or (None,) * len(entry.nodes)
    return [node_row(outcome, entry.source, n, t) for n, t in zip(entry.nodes, tracking, strict=True)]


def series_row(outcome: SeriesOutcome) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SERIES_SCHEMA.names)
    identity = outcome.identity
    row.update(
        ct_series_instance_uid=identity.ct_series_instance_uid,
        patient_id=identity.patient_id,
        study_instance_uid=identity.study_instance_uid,
        annotation=identity.annotation,
        status=outcome.status.value,
        model=outcome.model,
        seg_uri=outcome.seg_uri,
        sr_uri=outcome.sr_uri,
        qc_uri=outcome.qc_uri,
        pipeline_version=outcome.pipeline_version,
        processed_at=outcome.processed_at,
        total_s=outcome.total_s,
    )
    for stage, seconds in outcome.seconds.items():
        row[stage_column(stage)] = round(seconds, 4)
    if outcome.grid is not None:
        row.update(n_slices=outcome.grid.n_slices, slice_spacing_mm=outcome.grid.slice_spacing_mm)
    if not outcome.errors:
        for entry in outcome.sources:
            burden = entry.burden
            for name in BURDEN_COLUMNS:
                row[burden_column(name, entry.source)] = getattr(burden, name)
        if outcome.score is not None:
            row.update(dsc=outcome.score.dsc, assd_mm=finite_or_none(outcome.score.assd_mm))
        if outcome.detection is not None:
            d = outcome.detection
            row.update(
                n_reference_nodes_ge_10mm_detected=d.n_detected_short_axis_ge_10mm,
                sensitivity_short_axis_ge_10mm=finite_or_none(d.sensitivity_short_axis_ge_10mm),
                false_positive_nodes=d.n_false_positive_nodes,
                detection_iou_threshold=d.iou_threshold,
            )
    return conform(row, SERIES_SCHEMA)


def node_row(
    outcome: SeriesOutcome, source: NodeSource, node: NodeMeasurement, tracking_uid: str | None = None
) -> dict[str, Any]:
    """A ``nodes`` row: columns named like the measurement's fields; a point field ``p_mm``
    fills ``p_x_mm``, ``p_y_mm`` and ``p_z_mm``; an axis' end points ``a_axis_endpoints_mm``
    fill ``a_axis_start_x_mm`` ... ``a_axis_end_z_mm``."""
    row: dict[str, Any] = dict.fromkeys(NODES_SCHEMA.names)
    row.update(
        ct_series_instance_uid=outcome.identity.ct_series_instance_uid,
        patient_id=outcome.identity.patient_id,
        model=outcome.model,
        source=source.value,
        tracking_uid=tracking_uid,
    )
    for name in NODES_SCHEMA.names:
        if row[name] is None and name != "tracking_uid":
            row[name] = _node_value(node, name)
    return conform(row, NODES_SCHEMA)


def _node_value(node: NodeMeasurement, column: str) -> Any:
    if hasattr(node, column):
        value = getattr(node, column)
        return value.value if hasattr(value, "value") else value
    stem, _, unit = column.rpartition("_")  # e.g. centroid_x / mm
    point, _, axis = stem.rpartition("_")
    if axis in _AXES and hasattr(node, f"{point}_{unit}"):
        return getattr(node, f"{point}_{unit}")[_AXES.index(axis)]
    line, _, end = point.rpartition("_")  # e.g. long_axis / start
    if axis in _AXES and end in AXIS_ENDS and hasattr(node, f"{line}_endpoints_{unit}"):
        return getattr(node, f"{line}_endpoints_{unit}")[AXIS_ENDS.index(end)][_AXES.index(axis)]
    raise KeyError(f"nodes column {column!r} has no field in NodeMeasurement")


def error_row(outcome: SeriesOutcome, error: SeriesError) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ERRORS_SCHEMA.names)
    row.update(
        ct_series_instance_uid=outcome.identity.ct_series_instance_uid,
        model=outcome.model,
        stage=error.stage.value,
        error_type=error.error_type,
        message=error.message,
    )
    return conform(row, ERRORS_SCHEMA)

"""Result sets for report tests and the report bench: tables with random rows, or a small run of
real phantoms (measured, scored, with QC pictures) written as a run's output folder."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.enums import TIMED_STAGES, NodeSource
from pipeline.evaluate.case import evaluate_masks
from pipeline.geometry import Geometry, mask_to_sitk
from pipeline.measure.burden import series_burden
from pipeline.measure.categories import recist_category
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import NodeMeasurement, measure_labelled
from pipeline.outputs.schemas import (
    BURDEN_COLUMNS,
    ERRORS_SCHEMA,
    NODES_SCHEMA,
    SERIES_SCHEMA,
    burden_column,
    stage_column,
    to_table,
)
from pipeline.qc import nodes_for_qc, qc_png
from tests.support.phantoms import Ellipsoid, make_phantom

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
PROCESSED_AT = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
FAILURES = (
    ("fetch", "FetchError", "series {uid}: s5cmd exited 1 after 3 tries (NoSuchKey)"),
    ("decode", "DecodeError", "series {uid}: slice spacing not uniform (2.500 mm then 5.000 mm at z=-120.0)"),
    ("reference", "ReferenceSegError", "series {uid}: SEG references series 1.2.9, not this CT <script>"),
)


def _series_row(uid: str, patient: str, annotation: str, model: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SERIES_SCHEMA.names)
    row.update(
        ct_series_instance_uid=uid,
        patient_id=patient,
        study_instance_uid=uid + ".1",
        annotation=annotation,
        status="ok",
        model=model,
        pipeline_version="0.1.0",
        processed_at=PROCESSED_AT,
    )
    return row


def _failed(row: dict[str, Any], index: int) -> dict[str, Any]:
    stage, error_type, message = FAILURES[index % len(FAILURES)]
    row.update(status="error", total_s=0.5)
    error = dict.fromkeys(ERRORS_SCHEMA.names)
    uid = row["ct_series_instance_uid"]
    error.update(ct_series_instance_uid=uid, model=row["model"], stage=stage, error_type=error_type)
    error["message"] = message.format(uid=uid)
    return error


def random_tables(
    n_series: int, *, model: str = "reference", failed_every: int = 20, seed: int = 0
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """``series``, ``nodes`` and ``errors`` of a made-up run: plausible values, random."""
    rng = random.Random(seed)
    series, nodes, errors = [], [], []
    for i in range(n_series):
        uid = f"1.2.826.0.1.3680043.10.99.{i + 1}"
        row = _series_row(uid, f"case_{i + 1:04d}", "full" if rng.random() < 0.25 else "partial", model)
        if failed_every and i % failed_every == failed_every - 1:
            errors.append(_failed(row, i))
            series.append(row)
            continue
        seconds = {stage: rng.uniform(0.05, 2.0) for stage in TIMED_STAGES}
        if model == "reference":
            for stage in ("inference", "postprocess", "seg_write", "score"):
                seconds[stage] = None  # type: ignore[assignment]
        row.update({stage_column(s): v for s, v in seconds.items()})
        row["total_s"] = sum(v for v in seconds.values() if v is not None)
        row.update(n_slices=rng.randint(48, 556), slice_spacing_mm=rng.choice([1.0, 2.5, 5.0]))
        sources = ["reference"] + (["prediction"] if model != "reference" else [])
        for source in sources:
            count = rng.randint(1, 12 if row["annotation"] == "full" else 2)
            shorts = sorted((rng.lognormvariate(2.0, 0.5) for _ in range(count)), reverse=True)
            for k, short in enumerate(shorts, start=1):
                flag = "ok"
                if rng.random() < 0.08:  # a model's specks and, rarely, a blob no node can be
                    short, flag = rng.uniform(0.3, 0.7), "speck"
                elif rng.random() < 0.02:
                    short, flag = rng.uniform(101.0, 140.0), "implausible"
                long = short * rng.uniform(1.0, 2.0)
                node = dict.fromkeys(NODES_SCHEMA.names)
                node.update(
                    ct_series_instance_uid=uid,
                    patient_id=row["patient_id"],
                    model=model,
                    source=source,
                    node_index=k,
                    voxel_count=int(long * short * short),
                    volume_ml=long * short * short * 5e-4,
                    long_axis_mm=long,
                    short_axis_mm=short,
                    recist_category=recist_category(short).value,
                    quality_flag=flag,
                )
                nodes.append(node)
            mine = [n for n in nodes if n["ct_series_instance_uid"] == uid and n["source"] == source]
            row[f"n_{source}_nodes"] = len(mine)
            row[f"n_{source}_nodes_short_axis_ge_10mm"] = sum(n["short_axis_mm"] >= 10 for n in mine)
            row[f"{source}_volume_ml"] = sum(n["volume_ml"] for n in mine)
        if model != "reference":
            empty = rng.random() < 0.05
            row["dsc"] = 0.0 if empty else min(1.0, max(0.0, rng.gauss(0.65, 0.15)))
            row["assd_mm"] = None if empty else rng.lognormvariate(1.2, 0.5)
            n_big = row["n_reference_nodes_short_axis_ge_10mm"]
            row["n_reference_nodes_ge_10mm_detected"] = rng.randint(0, n_big)
            row["sensitivity_short_axis_ge_10mm"] = (
                row["n_reference_nodes_ge_10mm_detected"] / n_big if n_big else None
            )
            row["false_positive_nodes"] = rng.randint(0, 4) if row["annotation"] == "full" else None
            row["detection_iou_threshold"] = 0.1
        series.append(row)
    return to_table(series, "series"), to_table(nodes, "nodes"), to_table(errors, "errors")


def _node_rows(
    uid: str, patient: str, model: str, source: str, measured: list[NodeMeasurement]
) -> list[dict]:
    rows = []
    for m in measured:
        row = dict.fromkeys(NODES_SCHEMA.names)
        row.update(
            ct_series_instance_uid=uid,
            patient_id=patient,
            model=model,
            source=source,
            node_index=m.node_index,
            voxel_count=m.voxel_count,
            volume_ml=m.volume_ml,
            long_axis_mm=m.long_axis_mm,
            short_axis_mm=m.short_axis_mm,
            measurement_slice_z_mm=m.measurement_slice_z_mm,
            recist_category=m.recist_category,
            quality_flag=m.quality_flag.value,
        )
        row.update(dict(zip(("centroid_x_mm", "centroid_y_mm", "centroid_z_mm"), m.centroid_mm, strict=True)))
        rows.append(row)
    return rows


def phantom_run(
    output: Path, *, n_ok: int = 3, n_failed: int = 2, model: str = "torchscript:phantom.pt"
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """A run's output folder from real phantoms: tables in ``series/``, ``nodes/``, ``errors/`` and a
    QC picture per ok series in ``qc/``. The "model" is the reference mask shifted and eroded,
    scored by the LNQ2023 code."""
    series, nodes, errors = [], [], []
    (output / "qc").mkdir(parents=True, exist_ok=True)
    for i in range(n_ok):
        z_centre = -300.0 + 29 * 2.5 / 2.0
        ellipsoids = [
            Ellipsoid((-4.0 + 3 * i, -18.0, z_centre - 14.0), (9.0 + 2 * i, 7.0 + i, 8.0)),
            Ellipsoid((5.0, 12.0, z_centre + 6.0), (6.0, 5.0 - 0.5 * i, 6.0)),
        ][: 1 + (i % 2 == 0)]
        phantom = make_phantom(
            output / "phantoms" / str(i),
            seed=10 + i,
            shape_zyx=(30, 112, 112),
            nodes=ellipsoids,
            write_seg=False,
        )
        geometry = Geometry(phantom.hu.shape, phantom.origin_mm, phantom.spacing_mm, IDENTITY)
        uid, patient = phantom.series_uid, f"case_{i + 1:04d}"
        row = _series_row(uid, patient, "full" if i % 2 == 0 else "partial", model)
        ref_labels = label_nodes(phantom.mask, geometry)
        pred_mask = np.roll(phantom.mask, i + 1, axis=2)
        pred_mask[:, :, : 40 + 10 * i] &= i != 2  # the third series misses part of it
        pred_labels = label_nodes(pred_mask, geometry)
        ref_nodes = measure_labelled(ref_labels, geometry, hu=phantom.hu)
        pred_nodes = measure_labelled(pred_labels, geometry, hu=phantom.hu)
        for source, measured in (("reference", ref_nodes), ("prediction", pred_nodes)):
            burden = series_burden(measured)
            row.update(
                {burden_column(name, NodeSource(source)): getattr(burden, name) for name in BURDEN_COLUMNS}
            )
            nodes += _node_rows(uid, patient, model, source, measured)
        scores = evaluate_masks(
            mask_to_sitk(pred_mask, geometry),
            mask_to_sitk(phantom.mask, geometry),
            fully_annotated=row["annotation"] == "full",
        )
        row.update({k: v for k, v in scores.items() if k in row})
        row.update(n_slices=phantom.hu.shape[0], slice_spacing_mm=phantom.spacing_mm[2], total_s=1.5 + i)
        row.update({stage_column(s): 0.1 * (j + 1) for j, s in enumerate(TIMED_STAGES)})
        series.append(row)
        picture = qc_png(
            phantom.hu,
            geometry,
            reference_labels=ref_labels,
            prediction_labels=pred_labels,
            nodes=nodes_for_qc(ref_nodes, "reference") + nodes_for_qc(pred_nodes, "prediction"),
            title=f"{patient}  {uid}",
        )
        (output / "qc" / f"{uid}.png").write_bytes(picture)
    for j in range(n_failed):
        row = _series_row(f"1.2.826.0.1.3680043.10.77.{j + 1}", f"case_{n_ok + j + 1:04d}", "partial", model)
        errors.append(_failed(row, j))
        series.append(row)
    tables = (to_table(series, "series"), to_table(nodes, "nodes"), to_table(errors, "errors"))
    for name, table in zip(("series", "nodes", "errors"), tables, strict=True):
        (output / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, output / name / "part-00000-of-00001.parquet")
    return tables

"""Cases of the training export: their names, where each goes, and the case table.

A case is one cohort row (one CT series and its expert SEG). Its name is the patient id when that
is a safe file name (LNQ's are ``case_0002`` ...), with a short hash of the CT series added when a
patient has several series, else a hash: cohort values never become paths as they are. Names
depend only on the row and its patient's rows, so a rerun, or a rerun with ``--limit``, names a
case as before. The case table (``cases.parquet``) maps each case back to IDC.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.enums import SeriesStatus, Stage
from pipeline.training.dataset import Split, image_file, label_file
from pipeline.training.settings import TEST_ANNOTATION_CHOICES, is_partial

if TYPE_CHECKING:
    from pipeline.outcome import SeriesOutcome
    from pipeline.training.export_case import ExportedCase
    from pipeline.training.provenance import SeriesSource

EXPORT_LABEL = "export-training"
"""The ``model`` column of the export's error rows (the errors table is ``lnq run``'s)."""

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return None if value is None or value != value else str(value)  # NaN is not a value


def _hash(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def patient_key(raw: Mapping[str, Any]) -> str:
    """Who a row belongs to for cross-validation: its patient, or its own series when the cohort
    does not say."""
    return _text(raw, "patient_id") or f"series:{_text(raw, 'ct_series_instance_uid') or ''}"


def case_names(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """CT series UID -> case name, unique within ``rows`` (see the module)."""
    by_base: dict[str, list[str]] = defaultdict(list)
    for raw in rows:
        uid = _text(raw, "ct_series_instance_uid") or ""
        patient = _text(raw, "patient_id")
        base = patient if patient and _SAFE.match(patient) else f"case_{_hash(patient_key(raw), 10)}"
        by_base[base].append(uid)
    names: dict[str, str] = {}
    for base, uids in by_base.items():
        for uid in uids:
            names[uid] = base if len(uids) == 1 else f"{base}_{_hash(uid, 8)}"
    if len(set(names.values())) != len(names):  # a hash collision or a patient named like a suffix
        raise ValueError("two cohort rows would get the same case name; give their patients distinct ids")
    return names


@dataclass(frozen=True)
class PlannedCase:
    """One cohort row's place in the dataset, decided before any case runs."""

    case_id: str
    split: Split
    ct_series_instance_uid: str
    patient: str
    annotation: str | None

    @property
    def partial(self) -> bool:
        return is_partial(self.annotation)


def plan_cases(rows: Sequence[Mapping[str, Any]], *, test_annotation: str) -> list[PlannedCase]:
    """Each row's case name and split: with ``test_annotation`` ``full``, fully annotated cases are
    the test set (LNQ2023 scored on fully annotated cases); with ``none`` every case trains."""
    if test_annotation not in TEST_ANNOTATION_CHOICES:
        raise ValueError(f"test annotation {test_annotation!r} is not one of {TEST_ANNOTATION_CHOICES}")
    names = case_names(rows)
    planned = []
    for raw in rows:
        uid = _text(raw, "ct_series_instance_uid") or ""
        annotation = _text(raw, "annotation")
        test = test_annotation == "full" and annotation == "full"
        planned.append(
            PlannedCase(
                case_id=names[uid],
                split=Split.TEST if test else Split.TRAIN,
                ct_series_instance_uid=uid,
                patient=patient_key(raw),
                annotation=annotation,
            )
        )
    return planned


TIMESTAMP = pa.timestamp("us", tz="UTC")
CASES_SCHEMA = pa.schema(
    [
        pa.field("case_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("fold", pa.int64()),
        pa.field("image_file", pa.string()),
        pa.field("label_file", pa.string()),
        pa.field("patient_id", pa.string()),
        pa.field("study_instance_uid", pa.string()),
        pa.field("ct_series_instance_uid", pa.string(), nullable=False),
        pa.field("seg_series_instance_uid", pa.string()),
        pa.field("annotation", pa.string()),
        pa.field("labels", pa.string()),
        pa.field("n_slices", pa.int64()),
        pa.field("n_rows", pa.int64()),
        pa.field("n_columns", pa.int64()),
        pa.field("spacing_x_mm", pa.float64()),
        pa.field("spacing_y_mm", pa.float64()),
        pa.field("spacing_z_mm", pa.float64()),
        pa.field("lymph_node_voxels", pa.int64()),
        pa.field("background_voxels", pa.int64()),
        pa.field("ignore_voxels", pa.int64()),
        pa.field("ct_series_url", pa.string()),
        pa.field("seg_series_url", pa.string()),
        pa.field("idc_viewer_url", pa.string()),
        pa.field("collection_id", pa.string()),
        pa.field("source_doi", pa.string()),
        pa.field("license", pa.string()),
        pa.field("pipeline_version", pa.string()),
        pa.field("processed_at", TIMESTAMP),
        pa.field("fetch_s", pa.float64()),
        pa.field("decode_s", pa.float64()),
        pa.field("reference_s", pa.float64()),
        pa.field("export_s", pa.float64()),
        pa.field("total_s", pa.float64()),
    ]
)
"""``cases.parquet`` (and ``cases.csv``): one row per cohort row, in case order. ``labels``: ``full``
(0 and 1) or ``partial`` (0, 1 and the ignore label 2); ``fold``: the cross-validation fold whose
validation set holds the case (training cases only)."""

CASE_ROW_FROM_WORKER = (
    "case_id",
    "status",
    "split",
    "image_file",
    "label_file",
    "patient_id",
    "study_instance_uid",
    "ct_series_instance_uid",
    "seg_series_instance_uid",
    "annotation",
    "labels",
    "n_slices",
    "n_rows",
    "n_columns",
    "spacing_x_mm",
    "spacing_y_mm",
    "spacing_z_mm",
    "lymph_node_voxels",
    "background_voxels",
    "ignore_voxels",
    "ct_series_url",
    "seg_series_url",
    "pipeline_version",
    "processed_at",
    "fetch_s",
    "decode_s",
    "reference_s",
    "export_s",
    "total_s",
)
"""The columns a case's own run fills (kept in its stored result); the rest (``fold``, provenance)
are added when the dataset is finished, from what only the whole cohort knows."""
TIMED_STAGES = (Stage.FETCH, Stage.DECODE, Stage.REFERENCE, Stage.EXPORT)
"""The stages of a case, each with a ``<stage>_s`` column."""


def case_row(
    raw: Mapping[str, Any], planned: PlannedCase, outcome: SeriesOutcome, exported: ExportedCase | None
) -> dict[str, Any]:
    """A case's row of the case table as its own run knows it (:data:`CASE_ROW_FROM_WORKER`); the
    files, grid and label counts only when it is ``ok``."""
    row: dict[str, Any] = dict.fromkeys(CASE_ROW_FROM_WORKER)
    row.update(
        case_id=planned.case_id,
        status=outcome.status.value,
        split=planned.split.value,
        patient_id=outcome.identity.patient_id,
        study_instance_uid=outcome.identity.study_instance_uid,
        ct_series_instance_uid=outcome.series_uid,
        seg_series_instance_uid=_text(raw, "seg_series_instance_uid"),
        annotation=outcome.identity.annotation,
        labels="partial" if planned.partial else "full",
        ct_series_url=_text(raw, "ct_series_url"),
        seg_series_url=_text(raw, "seg_series_url"),
        pipeline_version=outcome.pipeline_version,
        processed_at=outcome.processed_at,
        total_s=outcome.total_s,
        **{f"{stage.value}_s": outcome.seconds.get(stage) for stage in TIMED_STAGES},
    )
    if outcome.status == SeriesStatus.OK and exported is not None:
        z, y, x = exported.size_zyx
        row.update(
            image_file=image_file(planned.case_id, planned.split),
            label_file=label_file(planned.case_id, planned.split),
            n_slices=z,
            n_rows=y,
            n_columns=x,
            spacing_x_mm=exported.spacing_mm[0],
            spacing_y_mm=exported.spacing_mm[1],
            spacing_z_mm=exported.spacing_mm[2],
            lymph_node_voxels=exported.counts.lymph_node,
            background_voxels=exported.counts.background,
            ignore_voxels=exported.counts.ignore,
        )
    return row


def finished_case_row(
    row: Mapping[str, Any], *, fold: int | None, source: SeriesSource | None
) -> dict[str, Any]:
    """A stored case row completed with what the whole cohort decides: its cross-validation fold and
    its IDC source (None: not in IDC's index)."""
    return {
        **row,
        "fold": fold,
        "idc_viewer_url": source.idc_viewer_url if source else None,
        "collection_id": source.collection_id if source else None,
        "source_doi": source.source_doi if source else None,
        "license": source.license if source else None,
    }


def case_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """The case table from complete rows (every column of :data:`CASES_SCHEMA`), sorted by case."""
    names = CASES_SCHEMA.names
    ordered = []
    for row in sorted(rows, key=lambda r: str(r["case_id"])):
        missing = [n for n in names if n not in row]
        extra = [n for n in row if n not in names]
        if missing or extra:
            raise KeyError(f"case row does not fit the schema: missing {missing}, unexpected {extra}")
        ordered.append({n: row[n] for n in names})
    return pa.Table.from_pylist(ordered, schema=CASES_SCHEMA)

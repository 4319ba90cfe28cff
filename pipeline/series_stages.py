"""The stages after the masks exist: measure, score, and make the series' SEG, SR and QC picture.

:func:`measure_series` runs in an isolated child (:mod:`pipeline.isolation`) like the
decoding does, so that the CPU-heavy Python work of several series runs in parallel
processes rather than in one worker's threads, and the worker keeps only the model. In
reference mode, with nothing to predict, the same child read the inputs (:func:`load_and_measure`).
It returns a small
record and writes the files into the series' work folder, where the worker copies them from
(the files of a noisy model's series can be hundreds of MB: they never pass through the pipe,
nor sit whole in the worker's memory).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.cohort.rows import CohortRow
from pipeline.dicom.seg_writer import nodes_seg, segment_tracking
from pipeline.dicom.sr import nodes_sr
from pipeline.dicom.tracking import node_tracking
from pipeline.enums import DEFAULT_IOU_THRESHOLD, REFERENCE_MODEL, Annotation, NodeSource, Stage
from pipeline.evaluate.detection import Detection, detect
from pipeline.evaluate.lnq2023 import CaseScore, score_case
from pipeline.geometry import CtVolume, mask_to_sitk
from pipeline.inputs import SeriesInputs
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled
from pipeline.models.base import SavedPrediction
from pipeline.outcome import GridSummary, SourceNodes
from pipeline.stage_clock import StageReporter


@dataclass(frozen=True)
class MeasuredSeries:
    """What a series produced: its nodes per source, scores, and the files to store."""

    grid: GridSummary
    sources: tuple[SourceNodes, ...]
    score: CaseScore | None
    detection: Detection | None
    files: dict[str, str]
    """Where each file made (``seg``, ``sr``, ``qc``) is, in the series' work folder."""


@dataclass(frozen=True)
class Writer:
    """Who made the run's nodes, as the SEG and SR name them: the model (its name and version, as
    the loaded model reports them) or, in reference mode, the expert, whose nodes the pipeline split."""

    source: NodeSource
    model_name: str
    model_version: str

    @classmethod
    def of(cls, row: CohortRow, model: _Named | None) -> Writer:
        if model is None:
            return cls(NodeSource.REFERENCE, REFERENCE_MODEL, row.seg_series_instance_uid or REFERENCE_MODEL)
        return cls(NodeSource.PREDICTION, str(model.name), str(model.version))


class _Named(Protocol):
    name: str
    version: str


def load_and_measure(
    *, report: StageReporter, load: Callable[..., SeriesInputs], measure: Callable[..., MeasuredSeries]
) -> MeasuredSeries:
    """The series path with nothing to predict (reference mode): the inputs are measured in the
    process that read them, so they never leave its memory."""
    inputs = load(report=report, in_memory=True)
    return measure(report=report, inputs=inputs, prediction=None)


def measure_series(
    *,
    report: StageReporter,
    inputs: SeriesInputs,
    prediction: SavedPrediction | None,
    row: CohortRow,
    writer: Writer,
    files_to: str | None,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
) -> MeasuredSeries:
    """Measure every mask, score the prediction against the reference, and make the files of
    ``writer``'s nodes in the folder ``files_to`` (none when it is None). Node detection matches at
    IoU >= ``iou_threshold``."""
    ct, reference = inputs.load()
    masks: dict[NodeSource, np.ndarray] = {}
    if reference is not None:
        masks[NodeSource.REFERENCE] = reference
    if prediction is not None and prediction.grid is None:  # a mask on the CT grid, mapped
        masks[NodeSource.PREDICTION] = prediction.on_ct_grid(ct.geometry)
    elif prediction is not None:  # the model's probabilities, brought to the CT grid here
        report(Stage.POSTPROCESS)
        masks[NodeSource.PREDICTION] = prediction.on_ct_grid(ct.geometry)

    report(Stage.MEASURE)
    labels = {source: label_nodes(mask, ct.geometry) for source, mask in masks.items()}
    sources = tuple(
        SourceNodes(source, tuple(measure_labelled(labels[source], ct.geometry, hu=ct.hu)))
        for source in masks
    )

    score = detection = None
    if prediction is not None and reference is not None:
        report(Stage.SCORE)
        score, detection = _score(
            ct,
            masks,
            labels,
            sources,
            fully_annotated=row.annotation == Annotation.FULL,
            iou_threshold=iou_threshold,
        )

    files: dict[str, str] = {}
    if files_to is not None:
        os.makedirs(files_to, exist_ok=True)
        report(Stage.SEG_WRITE)
        nodes = next(s.nodes for s in sources if s.source == writer.source)
        name, version = writer.model_name, writer.model_version
        seg = nodes_seg(
            labels[writer.source], ct, nodes, model_name=name, model_version=version, source=writer.source
        )
        files["seg"] = os.path.join(files_to, "seg.dcm")
        seg.save_as(files["seg"])
        in_seg = {n: t.uid for n, t in segment_tracking(seg).items()}
        reported = [n for n in nodes if n.node_index in in_seg]  # the largest: see MAX_NODE_SEGMENTS
        sr = nodes_sr(seg, reported, ct=ct, model_name=name, model_version=version, source=writer.source)
        if sr is not None:
            files["sr"] = os.path.join(files_to, "sr.dcm")
            sr.save_as(files["sr"])
        sources = tuple(
            _tracked(s, in_seg if s.source == writer.source else {}, row.ct_series_instance_uid, writer)
            for s in sources
        )
        report(Stage.QC)
        files["qc"] = os.path.join(files_to, "qc.png")
        with open(files["qc"], "wb") as f:
            f.write(_qc_picture(ct, labels, sources, title=_qc_title(row)))
    return MeasuredSeries(
        grid=GridSummary.of(ct.geometry), sources=sources, score=score, detection=detection, files=files
    )


def _tracked(entry: SourceNodes, in_seg: Mapping[int, str], series_uid: str, writer: Writer) -> SourceNodes:
    """``entry`` with each node's tracking UID: the one its SEG segment carries, or for nodes
    without a segment (the expert's, in model mode) the one the SEG writer would derive."""

    def uid_of(node_index: int) -> str:
        if node_index in in_seg:
            return in_seg[node_index]
        return node_tracking(
            series_uid,
            model_name=writer.model_name,
            model_version=writer.model_version,
            source=entry.source,
            node_index=node_index,
        ).uid

    return dataclasses.replace(entry, tracking_uids=tuple(uid_of(n.node_index) for n in entry.nodes))


def _qc_title(row: CohortRow) -> str:
    """The patient and series a QC picture shows; the patient ID is the cohort's text, drawn as it
    is (never as markup) and cut short enough to leave room for the UID."""
    from pipeline.qc.text import plain

    return f"{plain(row.patient_id, max_chars=64)}  {row.ct_series_instance_uid}"


def _qc_picture(
    ct: CtVolume, labels: dict[NodeSource, np.ndarray], sources: tuple[SourceNodes, ...], *, title: str
) -> bytes:
    """The series' QC picture: outlines of both masks and the axes of every measured node."""
    from pipeline.qc.picture import nodes_for_qc, qc_png

    return qc_png(
        ct.hu,
        ct.geometry,
        reference_labels=labels.get(NodeSource.REFERENCE),
        prediction_labels=labels.get(NodeSource.PREDICTION),
        nodes=[node for entry in sources for node in nodes_for_qc(entry.nodes, entry.source.value)],
        title=title,
    )


def _score(
    ct: CtVolume,
    masks: dict[NodeSource, np.ndarray],
    labels: dict[NodeSource, np.ndarray],
    sources: tuple[SourceNodes, ...],
    *,
    fully_annotated: bool,
    iou_threshold: float,
) -> tuple[CaseScore, Detection]:
    """LNQ2023 scores of the prediction against the reference, and node detection."""
    reference_nodes = next(s.nodes for s in sources if s.source == NodeSource.REFERENCE)
    score = score_case(
        mask_to_sitk(masks[NodeSource.PREDICTION], ct.geometry),
        mask_to_sitk(masks[NodeSource.REFERENCE], ct.geometry),
    )
    detection = detect(
        labels[NodeSource.PREDICTION],
        labels[NodeSource.REFERENCE],
        ref_short_axis_mm={n.node_index: n.short_axis_mm for n in reference_nodes},
        fully_annotated=fully_annotated,
        iou_threshold=iou_threshold,
    )
    return score, detection

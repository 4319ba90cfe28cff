"""One case of the training export, from cohort row to two NIfTI files in its work folder.

:func:`export_case` runs in the series' isolated child (:mod:`pipeline.isolation`), as reference
mode does: it fetches, decodes and reads the expert SEG with the same code
(:func:`pipeline.inputs.load_series_inputs`), so a CT that ``lnq run`` refuses is refused here
too, for the same reason. It then builds the case's labels (:mod:`pipeline.training.labels`) and
writes the CT in HU and the labels on the CT's own grid. Only a small record crosses back; the
worker copies the files to the dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.cohort.rows import CohortRow
from pipeline.enums import Stage
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.inputs import load_series_inputs
from pipeline.stage_clock import StageReporter
from pipeline.training.labels import LabelCounts, training_labels
from pipeline.training.nifti import write_nifti
from pipeline.training.settings import FILE_ENDING, KnownBackground, is_partial

IMAGE_NAME = f"image{FILE_ENDING}"
LABEL_NAME = f"label{FILE_ENDING}"


@dataclass(frozen=True)
class ExportedCase:
    """What one case wrote into its work folder, its grid and its labels."""

    image_path: str
    label_path: str
    size_zyx: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    counts: LabelCounts
    partial: bool


def export_case(
    *,
    report: StageReporter,
    row: CohortRow,
    folder: str,
    fetch: FetchConfig,
    background: KnownBackground,
) -> ExportedCase:
    """Fetch, decode and read the expert SEG of ``row`` into ``folder``, then write its CT in HU
    (``image.nii.gz``, the decoder's dtype) and its labels (``label.nii.gz``, uint8) there."""
    inputs = load_series_inputs(
        report=report, row=row, folder=folder, fetch=fetch, reference_required=True, in_memory=True
    )
    report(Stage.EXPORT)
    ct, reference = inputs.load()
    assert reference is not None  # reference_required
    labels = training_labels(reference, ct.hu, annotation=row.annotation, background=background)
    del reference, inputs  # the SEG mask: the labels hold what is needed of it
    counts = LabelCounts.of(labels)
    label_path = os.path.join(folder, LABEL_NAME)
    write_nifti(labels, ct.geometry, label_path)
    del labels
    image_path = os.path.join(folder, IMAGE_NAME)
    write_nifti(ct.hu, ct.geometry, image_path)
    return ExportedCase(
        image_path=image_path,
        label_path=label_path,
        size_zyx=ct.geometry.size_zyx,
        spacing_mm=ct.geometry.spacing_mm,
        counts=counts,
        partial=is_partial(row.annotation),
    )

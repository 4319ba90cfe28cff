"""The training export (``lnq export-training``): an nnU-Net v2 raw dataset from a cohort.

Labels and the known-background rule (``labels``), NIfTI on the CT's grid (``nifti``), the dataset
layout and ``dataset.json`` (``dataset``), case names, splits and the case table (``cases``,
``splits``), provenance from idc-index (``provenance``), and one case's isolated work
(``export_case``). Names are loaded on first use, as in ``pipeline.cohort``.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "BACKGROUND": "pipeline.training.settings",
    "IGNORE": "pipeline.training.settings",
    "LYMPH_NODE": "pipeline.training.settings",
    "BackgroundRule": "pipeline.training.settings",
    "KnownBackground": "pipeline.training.settings",
    "is_partial": "pipeline.training.settings",
    "LabelCounts": "pipeline.training.labels",
    "training_labels": "pipeline.training.labels",
    "read_nifti": "pipeline.training.nifti",
    "write_nifti": "pipeline.training.nifti",
    "Split": "pipeline.training.dataset",
    "dataset_folder_name": "pipeline.training.dataset",
    "dataset_json": "pipeline.training.dataset",
    "image_file": "pipeline.training.dataset",
    "label_file": "pipeline.training.dataset",
    "CASES_SCHEMA": "pipeline.training.cases",
    "EXPORT_LABEL": "pipeline.training.cases",
    "case_row": "pipeline.training.cases",
    "finished_case_row": "pipeline.training.cases",
    "PlannedCase": "pipeline.training.cases",
    "case_names": "pipeline.training.cases",
    "case_table": "pipeline.training.cases",
    "plan_cases": "pipeline.training.cases",
    "patient_folds": "pipeline.training.splits",
    "fold_of": "pipeline.training.splits",
    "series_sources": "pipeline.training.provenance",
    "dataset_provenance": "pipeline.training.provenance",
    "ExportedCase": "pipeline.training.export_case",
    "export_case": "pipeline.training.export_case",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

"""The options of ``lnq export-training``, light enough that ``--help`` answers at once (no Beam,
numpy or torch imported); the job is ``beam_jobs.export_training``."""

from __future__ import annotations

import argparse

from beam_jobs.shared_args import (
    add_cohort_arguments,
    add_dataflow_group,
    add_limit_arguments,
    add_local_arguments,
)
from pipeline.training.settings import (
    DEFAULT_DATASET_ID,
    DEFAULT_DATASET_NAME,
    TEST_ANNOTATION_CHOICES,
    BackgroundRule,
    KnownBackground,
)

DESCRIPTION = """Export a cohort as an nnU-Net v2 raw dataset, OUTPUT/Dataset<ID>_<NAME>/: each CT in HU
on its own grid (imagesTr, imagesTs), the expert SEG as labels (labelsTr, labelsTs; partially
annotated cases with nnU-Net's ignore label), dataset.json, patient-level splits_final.json and the
case table cases.parquet. Finished cases are kept as they finish; a rerun resumes. Exit codes: 0 every
case ok (or, on Dataflow, the job submitted: it finishes the dataset itself), 3 some cases failed (see
errors.parquet), 2 a usage error, 1 the job failed, 130 interrupted.
See docs/training.md."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lnq export-training",
        description=DESCRIPTION,
        epilog="Other options go to Beam if Beam declares them, e.g. --runner DataflowRunner --project P.",
    )
    parser.add_argument("--output", required=True, help="folder to hold the dataset folder (local or gs://)")
    add_cohort_arguments(parser, verb="export")
    dataset = parser.add_argument_group("dataset")
    dataset.add_argument(
        "--dataset-id", type=int, default=DEFAULT_DATASET_ID, help="nnU-Net dataset id (default %(default)s)"
    )
    dataset.add_argument(
        "--dataset-name", default=DEFAULT_DATASET_NAME, help="nnU-Net dataset name (default %(default)s)"
    )
    dataset.add_argument(
        "--test-annotation",
        choices=TEST_ANNOTATION_CHOICES,
        default="full",
        help="full: the fully annotated cases are the test set (imagesTs, labelsTs), as LNQ2023 scored; "
        "none: every case is a training case (default %(default)s)",
    )
    dataset.add_argument(
        "--partial-background",
        choices=[rule.value for rule in BackgroundRule],
        default=BackgroundRule.HU.value,
        help="known background of partially annotated cases: hu (air and lung, bone, outside the body "
        "are 0; the rest not drawn is ignored) or none (everything not drawn is ignored)",
    )
    dataset.add_argument(
        "--air-below-hu",
        type=float,
        default=KnownBackground.air_below_hu,
        metavar="HU",
        help="hu rule: voxels below this are air or lung (default %(default)g)",
    )
    dataset.add_argument(
        "--bone-above-hu",
        type=float,
        default=KnownBackground.bone_above_hu,
        metavar="HU",
        help="hu rule: voxels above this are bone (default %(default)g)",
    )
    add_local_arguments(parser, unit="cases")
    parser.add_argument(
        "--fresh", action="store_true", help="export every case again (default: resume, skip finished cases)"
    )
    add_limit_arguments(
        parser,
        unit="case",
        timeout_help="a case's isolated process (fetch, decode, labels, NIfTI)",
        memory_help="a case's isolated process",
    )
    add_dataflow_group(parser, unit="cases", finish="finishes the dataset")
    return parser

"""The options of ``lnq export-training``, light enough that ``--help`` answers at once (no Beam,
numpy or torch imported); the job is ``beam_jobs.export_training``."""

from __future__ import annotations

import argparse

from pipeline.enums import ANNOTATION_CHOICES
from pipeline.fetch.s5cmd import AWS_ENDPOINT, GCS_ENDPOINT, FetchConfig
from pipeline.isolation import GIB, Limits
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
case ok, 3 some cases failed (see errors.parquet), 2 a usage error, 1 the job failed, 130 interrupted.
See docs/training.md."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lnq export-training",
        description=DESCRIPTION,
        epilog="Other options go to Beam if Beam declares them, e.g. --runner DataflowRunner --project P.",
    )
    parser.add_argument("--output", required=True, help="folder to hold the dataset folder (local or gs://)")
    parser.add_argument("--cohort", help="cohort Parquet file from 'lnq cohort' (default: LNQ query)")
    parser.add_argument(
        "--annotation",
        choices=ANNOTATION_CHOICES,
        default="all",
        help="with no --cohort: which LNQ annotations to select",
    )
    parser.add_argument("--limit", type=int, help="export only the first N cohort rows")
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
    parser.add_argument(
        "--s3-endpoint",
        default=None,
        help=f"S3 endpoint for s5cmd: {AWS_ENDPOINT} (AWS, the local default) or {GCS_ENDPOINT} "
        "(IDC's Google Cloud copy, the default on Dataflow)",
    )
    parser.add_argument("--workers", type=int, default=1, help="cases exported at once locally")
    parser.add_argument(
        "--fresh", action="store_true", help="export every case again (default: resume, skip finished cases)"
    )
    parser.add_argument("--work-dir", help="where per-case temporary folders go (default: system temp)")
    parser.add_argument("--log-level", default=None, help=argparse.SUPPRESS)  # also after the command
    limits = parser.add_argument_group("limits per case")
    limits.add_argument(
        "--series-timeout",
        type=float,
        default=Limits.timeout_s,
        metavar="SECONDS",
        help="wall-clock limit of a case's isolated process (fetch, decode, labels, NIfTI; "
        "default %(default)g s)",
    )
    limits.add_argument(
        "--series-memory-gb",
        type=float,
        default=Limits.memory_bytes / GIB if Limits.memory_bytes else 0,
        metavar="GB",
        help="address-space limit of a case's isolated process (default %(default)g GB; 0: none)",
    )
    limits.add_argument(
        "--fetch-timeout",
        type=float,
        default=FetchConfig.timeout_s,
        metavar="SECONDS",
        help="limit for one case's whole fetch, all attempts together (default %(default)g s)",
    )
    limits.add_argument(
        "--allow-bucket",
        action="append",
        default=[],
        metavar="NAME",
        help="also read this bucket (default: only IDC's public buckets); repeatable",
    )
    cloud = parser.add_argument_group("Dataflow")
    cloud.add_argument(
        "--series-per-worker",
        type=int,
        default=2,
        help="cases in flight per worker VM (number_of_worker_harness_threads; bounds memory)",
    )
    return parser

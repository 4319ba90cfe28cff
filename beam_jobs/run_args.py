"""The options of ``lnq run``, in a module light enough that ``lnq run --help`` answers at once.

Only argparse and the defaults' owners (small modules without numpy, Beam or torch) are
imported here; the job itself is ``beam_jobs.launch``.
"""

from __future__ import annotations

import argparse

from pipeline.enums import (
    ANNOTATION_CHOICES,
    DEFAULT_IOU_THRESHOLD,
    DEVICES,
    NNUNET_CHECKPOINT,
    NNUNET_STEP_SIZE,
    REFERENCE_MODEL,
)
from pipeline.fetch.s5cmd import AWS_ENDPOINT, GCS_ENDPOINT, FetchConfig
from pipeline.isolation import GIB, Limits

DESCRIPTION = """Process a cohort: fetch each CT series from IDC, measure its lymph nodes (expert
reference or a model you bring), and publish Parquet tables (series, nodes, errors) to --output.
Finished series are kept as they finish; a rerun resumes. Exit codes: 0 every series ok, 3 some
series failed (see errors/), 2 a usage error, 1 the job failed, 130 interrupted."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lnq run",
        description=DESCRIPTION,
        epilog="Other options go to Beam if Beam declares them, e.g. --runner DataflowRunner --project P.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", help="cohort Parquet file from 'lnq cohort' (default: LNQ query)")
    parser.add_argument("--output", required=True, help="output folder (local path or gs://)")
    parser.add_argument(
        "--annotation",
        choices=ANNOTATION_CHOICES,
        default="all",
        help="with no --cohort: which LNQ annotations to select",
    )
    parser.add_argument("--limit", type=int, help="process only the first N cohort rows")
    parser.add_argument(
        "--s3-endpoint",
        default=None,
        help=f"S3 endpoint for s5cmd: {AWS_ENDPOINT} (AWS, the local default) or {GCS_ENDPOINT} "
        "(IDC's Google Cloud copy, the default on Dataflow)",
    )
    parser.add_argument("--workers", type=int, default=1, help="series processed at once locally")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="reprocess every series (default: resume, skipping series already done with the same settings)",
    )
    parser.add_argument(
        "--report", action="store_true", help="write the run report OUTPUT/report/index.html at the end"
    )
    parser.add_argument("--log-level", default=None, help=argparse.SUPPRESS)  # also accepted after 'run'

    parser.add_argument("--work-dir", help="where per-series temporary folders go (default: system temp)")
    limits = parser.add_argument_group("limits per series")
    limits.add_argument(
        "--series-timeout",
        type=float,
        default=Limits.timeout_s,
        metavar="SECONDS",
        help="wall-clock limit of each isolated process of one series: fetch and decode, measure "
        "and write, and of its inference in the model host (default %(default)g s)",
    )
    limits.add_argument(
        "--series-memory-gb",
        type=float,
        default=Limits.memory_bytes / GIB if Limits.memory_bytes else 0,
        metavar="GB",
        help="address-space limit of each isolated process of one series, and the memory the model "
        "host may hold per series above its own (default %(default)g GB; 0: none)",
    )
    limits.add_argument(
        "--fetch-timeout",
        type=float,
        default=FetchConfig.timeout_s,
        metavar="SECONDS",
        help="limit for one series' whole fetch, all attempts together (default %(default)g s)",
    )
    limits.add_argument(
        "--allow-bucket",
        action="append",
        default=[],
        metavar="NAME",
        help="also read this bucket (default: only IDC's public buckets); repeatable",
    )
    cloud = parser.add_argument_group("Dataflow")
    cloud.add_argument("--gpu", help="GPU per worker VM, TYPE[:COUNT], e.g. nvidia-l4:1 (Dataflow only)")
    cloud.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on a remote runner, wait for the job to end and print its summary (--no-wait: submit "
        "and exit 0; the job publishes the tables itself). A flex template or a dry run never waits",
    )
    cloud.add_argument(
        "--series-per-worker",
        type=int,
        default=2,
        help="series in flight per worker VM (number_of_worker_harness_threads; bounds memory)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=REFERENCE_MODEL,
        help="reference (measure the expert SEG), nnunet:DIR (nnU-Net v2 results folder) "
        "or torchscript:FILE (with FILE's .json sidecar)",
    )
    model.add_argument("--device", choices=DEVICES, default="auto", help="where the model runs")
    model.add_argument("--folds", nargs="+", help="nnU-Net folds to ensemble (default: all present)")
    model.add_argument("--checkpoint", default=NNUNET_CHECKPOINT, help="nnU-Net checkpoint file name")
    model.add_argument(
        "--step-size", type=float, default=NNUNET_STEP_SIZE, help="nnU-Net sliding-window step (0-1]"
    )
    model.add_argument(
        "--iou-threshold",
        type=float,
        default=DEFAULT_IOU_THRESHOLD,
        metavar="T",
        help="node detection against the expert: a predicted node detects a reference node when their "
        "IoU is >= T, one to one (default %(default)g, nnDetection's threshold)",
    )
    model.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="nnU-Net test-time mirroring (--no-tta is faster)",
    )
    model.add_argument(
        "--trust-model-code",
        action="store_true",
        help="load nnU-Net checkpoints as nnunetv2 does, letting their pickles run code, and any network "
        "class plans.json names: only for a model whose source you trust (default: weights only, and a "
        "checkpoint that needs more is refused)",
    )

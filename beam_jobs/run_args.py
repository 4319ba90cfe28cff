"""The options of ``lnq run``, in a module light enough that ``lnq run --help`` answers at once.

Only argparse and the defaults' owners (small modules without numpy, Beam or torch) are
imported here; the job itself is ``beam_jobs.launch``.
"""

from __future__ import annotations

import argparse

from beam_jobs.shared_args import (
    add_cohort_arguments,
    add_dataflow_group,
    add_limit_arguments,
    add_local_arguments,
)
from pipeline.enums import (
    DEFAULT_IOU_THRESHOLD,
    DEVICES,
    NNUNET_CHECKPOINT,
    NNUNET_STEP_SIZE,
    REFERENCE_MODEL,
)

DESCRIPTION = """Process a cohort: fetch each CT series from IDC, measure its lymph nodes (expert
reference or a model you bring), and publish Parquet tables (series, nodes, errors, measurements) to --output.
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
    add_cohort_arguments(parser, verb="process")
    parser.add_argument("--output", required=True, help="output folder (local path or gs://)")
    add_local_arguments(parser, unit="series")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="reprocess every series (default: resume, skipping series already done with the same settings)",
    )
    parser.add_argument(
        "--report", action="store_true", help="write the run report OUTPUT/report/index.html at the end"
    )
    add_limit_arguments(
        parser,
        unit="series",
        timeout_help="each isolated process of one series: fetch and decode, measure and write, and of "
        "its inference in the model host",
        memory_help="each isolated process of one series, and the memory the model host may hold per "
        "series above its own",
    )
    cloud = add_dataflow_group(parser, unit="series", finish="publishes the tables")
    cloud.add_argument("--gpu", help="GPU per worker VM, TYPE[:COUNT], e.g. nvidia-l4:1 (Dataflow only)")
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

"""The options ``lnq run`` and ``lnq export-training`` share, declared once: which cohort, where
the bytes come from, the limits each series' isolated process runs under, and the Dataflow
workers' concurrency. Light to import, as the parsers are (no Beam, numpy or torch)."""

from __future__ import annotations

import argparse

from pipeline.enums import ANNOTATION_CHOICES
from pipeline.fetch.s5cmd import AWS_ENDPOINT, GCS_ENDPOINT, FetchConfig
from pipeline.isolation import GIB, Limits


def add_cohort_arguments(parser: argparse.ArgumentParser, *, verb: str) -> None:
    """``--cohort``, ``--annotation`` and ``--limit`` (``verb`` says what is done to the rows)."""
    parser.add_argument("--cohort", help="cohort Parquet file from 'lnq cohort' (default: LNQ query)")
    parser.add_argument(
        "--annotation",
        choices=ANNOTATION_CHOICES,
        default="all",
        help="with no --cohort: which LNQ annotations to select",
    )
    parser.add_argument("--limit", type=int, help=f"{verb} only the first N cohort rows")


def add_local_arguments(parser: argparse.ArgumentParser, *, unit: str) -> None:
    """Where the bytes come from, and how a local run goes (``unit``: series or cases)."""
    parser.add_argument(
        "--s3-endpoint",
        default=None,
        help=f"S3 endpoint for s5cmd: {AWS_ENDPOINT} (AWS, the local default) or {GCS_ENDPOINT} "
        "(IDC's Google Cloud copy, the default on Dataflow)",
    )
    parser.add_argument("--workers", type=int, default=1, help=f"{unit} processed at once locally")
    parser.add_argument("--work-dir", help=f"where per-{unit} temporary folders go (default: system temp)")
    parser.add_argument("--log-level", default=None, help=argparse.SUPPRESS)  # also after the command


def add_limit_arguments(
    parser: argparse.ArgumentParser, *, unit: str, timeout_help: str, memory_help: str
) -> None:
    """The limits of one series' (or case's) isolated processes and its fetch, and the buckets it
    may read: ``timeout_help`` and ``memory_help`` say which processes the limits bind."""
    limits = parser.add_argument_group(f"limits per {unit}")
    limits.add_argument(
        "--series-timeout",
        type=float,
        default=Limits.timeout_s,
        metavar="SECONDS",
        help=f"wall-clock limit of {timeout_help} (default %(default)g s)",
    )
    limits.add_argument(
        "--series-memory-gb",
        type=float,
        default=Limits.memory_bytes / GIB if Limits.memory_bytes else 0,
        metavar="GB",
        help=f"address-space limit of {memory_help} (default %(default)g GB; 0: none)",
    )
    limits.add_argument(
        "--fetch-timeout",
        type=float,
        default=FetchConfig.timeout_s,
        metavar="SECONDS",
        help=f"limit for the whole fetch of one {unit}, all attempts together (default %(default)g s)",
    )
    limits.add_argument(
        "--allow-bucket",
        action="append",
        default=[],
        metavar="NAME",
        help="also read this bucket (default: only IDC's public buckets); repeatable",
    )


def add_dataflow_group(parser: argparse.ArgumentParser, *, unit: str, finish: str) -> argparse._ArgumentGroup:
    """The Dataflow group, with ``--series-per-worker`` and ``--wait`` (``finish``: what the job's
    last step does); the caller may add its own options to it."""
    cloud = parser.add_argument_group("Dataflow")
    cloud.add_argument(
        "--series-per-worker",
        type=int,
        default=2,
        help=f"{unit} in flight per worker VM (number_of_worker_harness_threads; bounds memory)",
    )
    cloud.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"on a remote runner, wait for the job to end and print its summary (--no-wait: submit "
        f"and exit 0; the job {finish} itself). A flex template or a dry run never waits",
    )
    return cloud

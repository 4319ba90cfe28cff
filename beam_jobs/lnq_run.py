"""The LNQ job: cohort rows in, series/nodes/errors Parquet tables out.

Reads a cohort (a Parquet file from ``lnq cohort``, or the default LNQ query on
idc-index's bundled index), spreads the series over workers, processes each
one with :func:`pipeline.process.process_series`, and writes the three tables.
Crashes that escape the per-series handlers go to a dead-letter output and are
written as error rows, so every cohort row ends in ``series/`` exactly once.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.utils.shared import Shared

import pipeline
from beam_jobs.dataflow import GpuRequest, dataflow_args, is_dataflow, repo_setup_file
from beam_jobs.transforms import (
    ProcessSeriesFn,
    SegFileSink,
    WriteTable,
    check_model_reachable,
    dead_letter_to_result,
)
from pipeline.cohort.query import ANNOTATION_CHOICES, select_cohort
from pipeline.fetch.s5cmd import AWS_ENDPOINT, GCS_ENDPOINT, FetchConfig
from pipeline.models.spec import DEVICES, parse_model_spec
from pipeline.outputs.schemas import COHORT_SCHEMA, TABLES
from pipeline.process import ProcessConfig

logger = logging.getLogger(__name__)

LOCAL_RUNNER = "FnApiRunner"


@dataclass(frozen=True)
class RunSummary:
    """What a run did, read back from its own output."""

    n_cohort: int
    n_ok: int
    n_failed: int
    n_nodes: int
    output: str


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
    parser.add_argument("--workers", type=int, default=1, help="local worker processes")
    parser.add_argument("--work-dir", help="where per-series temporary folders go")
    cloud = parser.add_argument_group("Dataflow")
    cloud.add_argument("--gpu", help="GPU per worker VM, TYPE[:COUNT], e.g. nvidia-l4:1 (Dataflow only)")
    cloud.add_argument(
        "--series-per-worker",
        type=int,
        default=2,
        help="series in flight per worker VM (number_of_worker_harness_threads; bounds memory)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default="reference",
        help="reference (measure the expert SEG), nnunet:DIR (nnU-Net v2 results folder) "
        "or torchscript:FILE (with FILE's .json sidecar)",
    )
    model.add_argument("--device", choices=DEVICES, default="auto", help="where the model runs")
    model.add_argument("--folds", nargs="+", help="nnU-Net folds to ensemble (default: all present)")
    model.add_argument("--checkpoint", default="checkpoint_final.pth", help="nnU-Net checkpoint file name")
    model.add_argument("--step-size", type=float, default=0.5, help="nnU-Net sliding-window step (0-1]")
    model.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="nnU-Net test-time mirroring (--no-tta is faster)",
    )


def load_cohort_rows(path: str | None, *, annotation: str, limit: int | None) -> list[dict[str, Any]]:
    """Cohort rows as plain dicts, from a Parquet file or the default LNQ query."""
    if path is None:
        table = select_cohort(annotation=annotation, limit=limit)
    else:
        with FileSystems.open(path) as f:
            table = pq.read_table(f)
        missing = [n for n in COHORT_SCHEMA.names if n not in table.column_names]
        if missing:
            raise SystemExit(f"cohort {path} lacks columns {missing}")
        if limit is not None:
            table = table.slice(0, limit)
    return table.select(COHORT_SCHEMA.names).to_pylist()


def clear_tables(output: str) -> None:
    """Delete earlier results (tables and SEGs), so a rerun overwrites and never mixes runs."""
    for table in (*TABLES, "seg"):
        matches = FileSystems.match([f"{output}/{table}/*"])[0].metadata_list
        if matches:
            FileSystems.delete([m.path for m in matches])


def read_table(output: str, table: str) -> pa.Table:
    """Read one output table back (local or gs://)."""
    paths = sorted(m.path for m in FileSystems.match([f"{output}/{table}/*.parquet"])[0].metadata_list)
    parts = []
    for path in paths:
        with FileSystems.open(path) as f:
            parts.append(pq.read_table(f, schema=TABLES[table]))
    return pa.concat_tables(parts) if parts else TABLES[table].empty_table()


def pipeline_options(
    beam_args: list[str], *, workers: int, gpu: str | None = None, series_per_worker: int = 2
) -> PipelineOptions:
    """Beam options; locally the in-process runner is named explicitly (no Prism download),
    on Dataflow GPU workers and bounded model copies are added (``beam_jobs.dataflow``)."""
    args = list(beam_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if runner is None:
        runner = LOCAL_RUNNER
        args.append(f"--runner={LOCAL_RUNNER}")
    if runner in StandardOptions.LOCAL_RUNNERS and workers > 1:
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    if runner.endswith("DataflowRunner"):
        args = dataflow_args(
            args,
            gpu=GpuRequest.parse(gpu) if gpu else None,
            harness_threads=series_per_worker,
            setup_file=repo_setup_file(),
        )
    elif gpu:
        raise ValueError("--gpu asks Dataflow for GPU workers; locally use --device cuda")
    return PipelineOptions(args)


class ProcessCohort(beam.PTransform):
    """Cohort rows in; one ``{"series", "nodes", "errors"}`` result per row out, crashes included."""

    def __init__(self, fn: ProcessSeriesFn, *, config: ProcessConfig):
        super().__init__()
        self._fn = fn
        self._config = config

    def expand(self, rows):  # type: ignore[no-untyped-def]
        results, crashed = (
            rows | "Spread" >> beam.Reshuffle() | "Process" >> beam.ParDo(self._fn).with_exception_handling()
        )
        recovered = crashed | "DeadLetters" >> beam.Map(
            dead_letter_to_result, self._config.pipeline_version, self._config.model_label
        )
        return (results, recovered) | "Merge" >> beam.Flatten()


def build(
    p: beam.Pipeline,
    rows: list[dict[str, Any]],
    *,
    output: str,
    config: ProcessConfig,
    progress_dir: str | None,
    output_as_given: str | None = None,
    shared: Shared | None = None,
) -> None:
    """Wire the job into ``p``; in model mode SEGs go to ``OUTPUT/seg/``."""
    sink = None if config.model is None else SegFileSink(output, output_as_given or output)
    fn = ProcessSeriesFn(config, total=len(rows), progress_dir=progress_dir, seg_sink=sink, shared=shared)
    merged = (
        p
        | "Cohort" >> beam.Create(rows, reshuffle=False)
        | "ProcessCohort" >> ProcessCohort(fn, config=config)
    )
    series = merged | "SeriesRows" >> beam.Map(lambda r: r.series)
    nodes = merged | "NodeRows" >> beam.FlatMap(lambda r: r.nodes)
    errors = merged | "ErrorRows" >> beam.FlatMap(lambda r: r.errors)
    series | "WriteSeries" >> WriteTable(output, "series")
    nodes | "WriteNodes" >> WriteTable(output, "nodes")
    errors | "WriteErrors" >> WriteTable(output, "errors")


def normalise_output(output: str) -> str:
    return output.rstrip("/") if "://" in output else os.path.abspath(output)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Run the job; return the summary read back from the written tables."""
    parser = argparse.ArgumentParser(
        prog="lnq run",
        description=__doc__,
        epilog="Other options go to Beam, e.g. --runner DataflowRunner --project P --region R.",
    )
    add_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    output = normalise_output(args.output)
    rows = load_cohort_rows(args.cohort, annotation=args.annotation, limit=args.limit)
    logger.info("cohort: %d series; output: %s", len(rows), output)
    try:
        spec = parse_model_spec(
            args.model,
            device=args.device,
            checkpoint=args.checkpoint,
            step_size=args.step_size,
            tta=args.tta,
            folds=tuple(int(f) if f.isdigit() else f for f in (args.folds or ())),
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        options = pipeline_options(
            beam_args, workers=args.workers, gpu=args.gpu, series_per_worker=args.series_per_worker
        )
    except ValueError as exc:
        parser.error(str(exc))
    shared = Shared()
    if spec is not None:
        check_model_reachable(spec, shared)  # fail fast, before any series, if the model cannot be loaded
    endpoint = args.s3_endpoint or (GCS_ENDPOINT if is_dataflow(options) else AWS_ENDPOINT)
    config = ProcessConfig(
        fetch=FetchConfig(endpoint_url=endpoint),
        work_dir=args.work_dir,
        pipeline_version=pipeline.__version__,
        model=spec,
    )
    clear_tables(output)
    is_local = options.view_as(StandardOptions).runner in StandardOptions.LOCAL_RUNNERS
    with tempfile.TemporaryDirectory(prefix="lnq-progress-") as progress_dir:
        p = test_pipeline or beam.Pipeline(options=options)
        build(
            p,
            rows,
            output=output,
            config=config,
            progress_dir=progress_dir if is_local else None,
            output_as_given=args.output,
            shared=shared,
        )
        p.run().wait_until_finish()
    return summarise(output, rows)


def summarise(output: str, rows: list[dict[str, Any]]) -> RunSummary:
    """Check that every cohort row is in ``series/`` once, and count outcomes."""
    series = read_table(output, "series").to_pylist()
    written = [r["ct_series_instance_uid"] for r in series]
    expected = sorted(str(r["ct_series_instance_uid"] or "") for r in rows)
    if sorted(written) != expected:
        raise RuntimeError(
            f"series table has {len(written)} rows for {len(expected)} cohort rows: "
            "a cohort row was lost or duplicated"
        )
    n_ok = sum(1 for r in series if r["status"] == "ok")
    summary = RunSummary(
        n_cohort=len(rows),
        n_ok=n_ok,
        n_failed=len(series) - n_ok,
        n_nodes=read_table(output, "nodes").num_rows,
        output=output,
    )
    logger.info(
        "done: %d ok, %d failed of %d series; %d nodes; tables in %s",
        summary.n_ok,
        summary.n_failed,
        summary.n_cohort,
        summary.n_nodes,
        output,
    )
    return summary

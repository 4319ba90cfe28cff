"""The ``lnq`` command: select a cohort, run the job."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from pipeline.enums import ANNOTATION_CHOICES, DEFAULT_IOU_THRESHOLD
from pipeline.locations import is_gcs


def _evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    from pipeline.evaluate.case import evaluate_files, evaluate_folders

    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        parser.error(f"--threshold {args.threshold} is not a probability in (0, 1]")
    if not 0.0 < args.iou_threshold <= 1.0:
        parser.error(f"--iou-threshold {args.iou_threshold} is not in (0, 1]")
    common = {
        "fully_annotated": args.fully_annotated,
        "threshold": args.threshold,
        "iou_threshold": args.iou_threshold,
    }
    if args.pred and args.ref and not (args.pred_dir or args.ref_dir or args.ct_dir):
        result = evaluate_files(args.pred, args.ref, ct_dir=args.ct, **common)
    elif args.pred_dir and args.ref_dir and not (args.pred or args.ref or args.ct):
        result = evaluate_folders(args.pred_dir, args.ref_dir, ct_dir=args.ct_dir, **common)
    else:
        parser.error("evaluate needs --pred and --ref [--ct], or --pred-dir and --ref-dir [--ct-dir]")
    print(json.dumps(result, indent=None if args.json else 2, allow_nan=False))
    return 0


def _demo(args: argparse.Namespace) -> int:
    """``lnq demo``: phantoms, a cohort and a model written under OUTPUT, then the whole job on them
    (``beam_jobs.demo``). Exit 0 when only the series broken on purpose failed."""
    from beam_jobs.demo import demo_run_args
    from beam_jobs.launch import Submitted, normalise_output
    from beam_jobs.options import UsageError

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: expected at least 1")
    output = normalise_output(args.output)
    argv, n_bad = demo_run_args(output, workers=args.workers)
    from pipeline.isolation import start_fork_server

    start_fork_server()
    from beam_jobs.launch import run

    with _stop_children_on_signals():
        summary = run(argv)
    if isinstance(summary, Submitted):  # the demo names no remote runner
        raise RuntimeError(summary.message)
    print(
        f"demo: {summary.n_ok} ok, {summary.n_failed} failed of {summary.n_series} series "
        f"({n_bad} broken on purpose: see errors/); {summary.nodes_text}; tables in {summary.output}; "
        f"open the report: {summary.report}"
    )
    return EXIT_OK if summary.n_failed == n_bad else EXIT_SERIES_FAILED


def _load_bigquery(args: argparse.Namespace) -> int:
    from beam_jobs.bigquery import check_dataset, load_results, make_client
    from beam_jobs.launch import check_output

    project = check_dataset(args.dataset).split(".")[0]
    if not is_gcs(args.output):
        raise ValueError(f"--output {args.output!r}: BigQuery loads from Cloud Storage (gs://...)")
    check_output(args.output)
    client = make_client(project, location=args.location, what=f"loading {args.output} into {args.dataset}")
    loaded = load_results(client, output=args.output, dataset=args.dataset)
    print(", ".join(f"{table}: {n} rows" for table, n in loaded.items()))
    return 0


def _analytics(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if bool(args.output) == bool(args.dataset):
        parser.error("analytics needs --output DIR (DuckDB) or --dataset PROJECT.DATASET (BigQuery)")
    from pipeline.outputs.analytics import analytics_sql

    analytics_sql(args.query)  # an unknown name is a one-line error before any client is made
    if args.output:
        from pipeline.outputs.analytics import run_query

        table = run_query(args.output, args.query)
    else:
        from beam_jobs.bigquery import check_dataset, make_client, run_analytics_bigquery

        project = check_dataset(args.dataset).split(".")[0]
        client = make_client(project, what=f"querying {args.dataset}")
        table = run_analytics_bigquery(client, dataset=args.dataset, name=args.query)
    from pipeline.outputs.analytics import format_result

    print(format_result(table, args.format), end="")
    return 0


def _cohort(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from pipeline.cohort.query import select_cohort

    if args.bigquery_project:
        from beam_jobs.bigquery import make_client, select_cohort_bigquery

        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit {args.limit}: expected a positive number of series")
        client = make_client(args.bigquery_project, what="the BigQuery cohort")
        table = select_cohort_bigquery(client, annotation=args.annotation, limit=args.limit)
    else:
        table = select_cohort(annotation=args.annotation, limit=args.limit)
    if is_gcs(args.out):
        from beam_jobs.credentials import prepare_credentials

        prepare_credentials(what=f"writing {args.out}")
    with FileSystems.create(args.out) as f:
        pq.write_table(table, f)
    counts = table.group_by("annotation").aggregate([("ct_series_instance_uid", "count")])
    by = {r["annotation"]: r["ct_series_instance_uid_count"] for r in counts.to_pylist()}
    logging.getLogger("lnq").info("wrote %d cohort rows to %s %s", table.num_rows, args.out, by)
    return 0


class _OurWorkerMessages(logging.Filter):
    """Let through what Beam forwards from worker processes only when it is ours or a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return (
            record.levelno >= logging.WARNING
            and "semi_persistent" not in text
            or any(marker in text for marker in ("/beam_jobs/", "/pipeline/"))
        )


def configure_logging(level: str) -> None:
    """Our INFO progress, Beam's and highdicom's own chatter only from WARNING up (DEBUG shows
    everything); Python warnings of the libraries go to the log at DEBUG (``pipeline.warning_log``)."""
    from pipeline.warning_log import LOG_FORMAT, send_warnings_to_log

    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    send_warnings_to_log()
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        logging.getLogger("highdicom").setLevel(logging.WARNING)
        forwarded = logging.getLogger("apache_beam.runners.portability.local_job_service")
        forwarded.setLevel(logging.INFO)
        forwarded.addFilter(_OurWorkerMessages())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="lnq", description="Find and measure mediastinal lymph nodes in CT on NCI IDC."
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    cohort = sub.add_parser("cohort", help="select the LNQ cohort from idc-index (offline)")
    cohort.add_argument("--out", required=True, help="Parquet file to write")
    cohort.add_argument("--annotation", choices=ANNOTATION_CHOICES, default="all")
    cohort.add_argument("--limit", type=int)
    cohort.add_argument(
        "--bigquery-project",
        help="run the BigQuery twin on bigquery-public-data.idc_current (billed to this project)",
    )

    load = sub.add_parser("load-bigquery", help="load a run's Parquet tables from gs:// into BigQuery")
    load.add_argument("--output", required=True, help="the run's output folder, gs://...")
    load.add_argument("--dataset", required=True, help="PROJECT.DATASET to load into")
    load.add_argument("--location", default=None, help="BigQuery location of the dataset (e.g. US)")

    analytics = sub.add_parser("analytics", help="run an analytics query on a run's output (DuckDB)")
    analytics.add_argument("--output", help="the run's local output folder")
    analytics.add_argument("--dataset", help="or PROJECT.DATASET: run the query on BigQuery instead")
    analytics.add_argument("--query", required=True, help="node_burden, recist_categories, model_agreement")
    analytics.add_argument("--format", choices=("table", "json", "csv"), default="table")

    evaluate = sub.add_parser("evaluate", help="score a prediction against a reference by the LNQ2023 rules")
    evaluate.add_argument("--pred", help="prediction: DICOM SEG or a label image (.nrrd, .mha, .nii.gz)")
    evaluate.add_argument("--ref", help="reference: DICOM SEG or a label image")
    evaluate.add_argument("--ct", help="CT series folder: score on its grid (SEGs placed by reference)")
    evaluate.add_argument("--pred-dir", help="folder of predictions, paired with --ref-dir by file name")
    evaluate.add_argument("--ref-dir", help="folder of references; prints per case and cohort aggregates")
    evaluate.add_argument(
        "--ct-dir",
        help="folder of CT series folders, one per case: case NAME.EXT (e.g. case01.nii.gz, 1.2.3.dcm) "
        "is scored on the CT in CT_DIR/NAME/ (e.g. CT_DIR/case01/, CT_DIR/1.2.3/); extensions removed: "
        ".dcm .nii.gz .nii .nrrd .seg.nrrd .mha .mhd",
    )
    evaluate.add_argument(
        "--threshold",
        type=float,
        metavar="P",
        help="the prediction is a probability map (or a FRACTIONAL SEG): voxels >= P are foreground "
        "(e.g. 0.5); without it, predictions must hold integer labels (any non-zero label is foreground)",
    )
    evaluate.add_argument(
        "--fully-annotated",
        action="store_true",
        help="the reference marks every node, so unmatched predicted nodes count as false positives",
    )
    evaluate.add_argument(
        "--iou-threshold",
        type=float,
        default=DEFAULT_IOU_THRESHOLD,
        metavar="T",
        help="node detection: a predicted node detects a reference node when their IoU is >= T, one to one "
        "(default %(default)g, nnDetection's threshold)",
    )
    evaluate.add_argument("--json", action="store_true", help="one line of JSON instead of indented")

    demo = sub.add_parser(
        "demo",
        help="the whole job offline: LNQ-like phantoms, a HU-window model, the tables and the report",
    )
    demo.add_argument("--output", required=True, help="folder for the demo's inputs, tables and report")
    demo.add_argument("--workers", type=int, default=2, help="series processed at once (default 2)")

    report = sub.add_parser("report", help="write the run report OUTPUT/report/index.html (local or gs://)")
    report.add_argument("--output", required=True, help="the run's output folder")

    sub.add_parser(
        "run",
        add_help=False,
        help="run the job (see 'lnq run --help'); options it does not know go to Beam",
    )
    sub.add_parser(
        "export-training",
        add_help=False,
        help="export the cohort as an nnU-Net v2 raw dataset (see 'lnq export-training --help')",
    )

    level, argv = _take_log_level(argv)
    args, rest = parser.parse_known_args(argv)
    configure_logging(level or args.log_level)
    if args.command in ("cohort", "evaluate", "load-bigquery", "analytics", "report", "demo") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return _command(args, rest, parser)
    except KeyboardInterrupt:
        print(
            f"lnq {args.command}: interrupted; {_RESUME_HINT.get(args.command, '')}".rstrip(), file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = _exit_code(exc, args.command)
        if code is None:
            raise
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.getLogger("lnq").exception("lnq %s failed", args.command)
        print(f"lnq {args.command}: error: {exc}", file=sys.stderr)
        return code


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERIES_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_RESUME_HINT = {
    "run": "finished series are kept; run the same command again to resume "
    "(the published tables are unchanged)",
    "demo": "run it again to start over",
    "export-training": "finished cases are kept; run the same command again to resume",
}


def _exit_code(exc: Exception, command: str) -> int | None:
    """One-line errors and their exit codes: 2 for the user's mistakes, 1 for a failed job; None for
    anything else (a bug: its traceback is printed). Outside ``run``, a ValueError is a bad argument."""
    from beam_jobs.options import UsageError
    from beam_jobs.publish import RunFailed
    from beam_jobs.store import OutsideOutput
    from pipeline.errors import PipelineError

    if isinstance(exc, (UsageError, FileNotFoundError, NotADirectoryError, PipelineError)):
        return EXIT_USAGE
    if isinstance(exc, ValueError) and command not in ("run", "export-training"):
        return EXIT_USAGE
    if isinstance(exc, (RunFailed, OutsideOutput)) or type(exc).__name__ == "OutputLocked":
        return EXIT_FAILED
    return None


def _take_log_level(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--log-level LEVEL`` may stand before or after the subcommand: take it out wherever it is."""
    rest, level, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--log-level" and i + 1 < len(argv):
            level, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--log-level="):
            level = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return level, rest


def _command(args: argparse.Namespace, rest: list[str], parser: argparse.ArgumentParser) -> int:
    if args.command == "cohort":
        return _cohort(args)
    if args.command == "evaluate":
        return _evaluate(args, parser)
    if args.command == "load-bigquery":
        return _load_bigquery(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "analytics":
        return _analytics(args, parser)
    if args.command == "report":
        from beam_jobs.credentials import needs_credentials, prepare_credentials
        from beam_jobs.launch import normalise_output
        from beam_jobs.report import write_run_report

        if needs_credentials(args.output):
            prepare_credentials(what=f"the report of {args.output}")
        print(write_run_report(normalise_output(args.output)))
        return EXIT_OK
    if args.command == "export-training":
        return _export_training(rest)
    if "-h" in rest or "--help" in rest:  # answered without importing Beam, numpy or torch
        from beam_jobs.run_args import make_parser

        make_parser().print_help()
        return EXIT_OK
    if _series_run_in_this_process(rest):  # in isolated children of this process's fork server
        from pipeline.isolation import start_fork_server

        start_fork_server()
    from beam_jobs.launch import Submitted, as_summary_line, run

    with _stop_children_on_signals():
        outcome = run(rest)
    print(as_summary_line(outcome))
    if isinstance(outcome, Submitted):
        return EXIT_OK
    return EXIT_OK if outcome.n_failed == 0 else EXIT_SERIES_FAILED


def _export_training(rest: list[str]) -> int:
    """``lnq export-training``: the job of ``beam_jobs.export_training``, run as ``lnq run`` is (help
    without Beam, the fork server started early, signals stopping the cases' children)."""
    if "-h" in rest or "--help" in rest:
        from beam_jobs.export_args import make_parser

        make_parser().print_help()
        return EXIT_OK
    if _series_run_in_this_process(rest):
        from pipeline.isolation import start_fork_server

        start_fork_server()
    from beam_jobs.export_training import run as export
    from beam_jobs.launch import Submitted

    with _stop_children_on_signals():
        summary = export(rest)
    if isinstance(summary, Submitted):
        print(summary.message)
        return EXIT_OK
    print(
        f"{summary.n_ok} ok, {summary.n_failed} failed of {summary.n_cohort} cases; "
        f"{summary.n_training} training, {summary.n_test} test; dataset in {summary.dataset}"
    )
    return EXIT_OK if summary.n_failed == 0 else EXIT_SERIES_FAILED


def _series_run_in_this_process(rest: list[str]) -> bool:
    """Whether ``lnq run``'s arguments leave the series to this process (read before Beam is
    imported): not on Dataflow, nor in the separate SDK processes of Beam's local
    ``multi_processing`` mode, which start fork servers of their own."""
    for option, refused in (
        ("--runner", {"dataflowrunner", "dataflow"}),
        ("--direct_running_mode", {"multi_processing"}),
    ):
        for i, arg in enumerate(rest):
            value = arg.split("=", 1)[1] if arg.startswith(option + "=") else None
            if arg == option and i + 1 < len(rest):
                value = rest[i + 1]
            if value is not None and value.lower() in refused:
                return False
    return True


@contextlib.contextmanager
def _stop_children_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM stop the run cleanly: decoding children and downloads are killed (their
    process groups), then KeyboardInterrupt unwinds, removing temporary files and the lock."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        from beam_jobs.options import INTERRUPTED
        from pipeline import bounded, isolation

        INTERRUPTED.set()
        isolation.kill_all()
        bounded.kill_all()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def entry_point() -> None:
    """Console script: exit without running interpreter teardown after the job is done.

    Beam's multi-process local runner leaves gRPC threads behind that can abort
    the interpreter at teardown ("terminate called without an active exception")
    after all output is written and checked. Flushing and leaving with
    ``os._exit`` reports the job's real status instead of that abort. The fork server of the
    series' children is stopped first, so that the output ends when the job does.
    """
    try:
        code = main()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        logging.getLogger("lnq").exception("lnq failed")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    if "pipeline.isolation" in sys.modules:  # a run started the fork server
        from pipeline.isolation import stop_fork_server

        stop_fork_server()
    os._exit(code)


if __name__ == "__main__":
    entry_point()

"""Small Beam transforms around the pure ``pipeline`` library."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.metrics import Metrics

from pipeline.models.base import SegmentationModel
from pipeline.models.spec import shared_model
from pipeline.outputs.schemas import TABLES, conform, sort_rows
from pipeline.process import ProcessConfig, SeriesResult, base_series_row, error_row, process_series
from pipeline.uids import uid_problem

logger = logging.getLogger(__name__)


class SegFileSink:
    """Writes a SEG to ``OUTPUT/seg/<ct_series_instance_uid>.dcm`` through Beam's filesystems.

    Returns the path in the form ``--output`` was given (relative, absolute or gs://).
    """

    def __init__(self, output: str, output_as_given: str):
        self._output = output.rstrip("/")
        self._as_given = output_as_given.rstrip("/")

    def __call__(self, series_uid: str, data: bytes) -> str:
        problem = uid_problem(series_uid)
        if problem:  # never let a bad UID become a path
            raise ValueError(f"refusing to name a SEG file after {series_uid!r}: {problem}")
        with FileSystems.create(f"{self._output}/seg/{series_uid}.dcm", mime_type="application/dicom") as f:
            f.write(data)
        return f"{self._as_given}/seg/{series_uid}.dcm"


class ProcessSeriesFn(beam.DoFn):
    """Cohort row in, ``{"series", "nodes", "errors"}`` out; failures are rows too.

    The model is loaded in ``setup()`` once per worker process and shared by its
    threads (``shared_model``), never once per series.
    """

    def __init__(
        self,
        config: ProcessConfig,
        *,
        total: int,
        progress_dir: str | None = None,
        seg_sink: SegFileSink | None = None,
    ):
        self._config = config
        self._total = total
        self._progress_dir = progress_dir
        self._seg_sink = seg_sink
        self._model: SegmentationModel | None = None
        self._ok = Metrics.counter("lnq", "series_ok")
        self._failed = Metrics.counter("lnq", "series_failed")

    def setup(self) -> None:
        if not self._config.model.is_reference:
            self._model = shared_model(self._config.model)

    def process(self, raw: dict[str, Any]) -> Iterator[dict[str, Any]]:
        result = process_series(raw, config=self._config, model=self._model, seg_sink=self._seg_sink)
        (self._ok if result.series["status"] == "ok" else self._failed).inc()
        report_progress(self._progress_dir, result.series, total=self._total)
        yield result.as_dict()


def report_progress(progress_dir: str | None, series: dict[str, Any], *, total: int) -> None:
    """Log 'done/total' across local worker processes by counting marker files."""
    if progress_dir is None:
        logger.info("series %s: %s", series["ct_series_instance_uid"], series["status"])
        return
    uid = str(series["ct_series_instance_uid"])
    marker = hashlib.sha1(uid.encode()).hexdigest()
    with open(os.path.join(progress_dir, marker), "w", encoding="utf-8") as f:
        f.write(series["status"])
    done = len(os.listdir(progress_dir))
    logger.info(
        "[%d/%d] series %s: %s in %.1f s", done, total, uid, series["status"], series["total_s"] or 0.0
    )


def dead_letter_to_result(
    bad: tuple[dict[str, Any], tuple[Any, str, list[str]]], pipeline_version: str, model: str = "reference"
) -> dict[str, Any]:
    """Turn a crash caught by ``with_exception_handling`` into an error result."""
    raw, (exc_type, exc_repr, trace) = bad
    series = base_series_row(raw, pipeline_version=pipeline_version, model=model)
    uid = series["ct_series_instance_uid"]
    logger.error("series %s crashed outside the stage handlers: %s", uid, "".join(trace[-3:]))
    error = error_row(uid, "unexpected", RuntimeError(exc_repr))
    error["error_type"] = getattr(exc_type, "__name__", str(exc_type))
    return SeriesResult(series=series, errors=[error]).as_dict()


class WriteTable(beam.PTransform):
    """Write one table as a single, sorted Parquet file that a rerun overwrites."""

    def __init__(self, output: str, table: str):
        super().__init__()
        self._output = output.rstrip("/")
        self._table = table

    def expand(self, rows):  # type: ignore[no-untyped-def]
        table = self._table
        schema = TABLES[table]
        return (
            rows
            | "Conform" >> beam.Map(conform, schema)
            | "Gather" >> beam.combiners.ToList()
            | "Sort" >> beam.FlatMap(sort_rows, table)
            | "Write"
            >> WriteToParquet(
                file_path_prefix=f"{self._output}/{table}/part",
                schema=schema,
                file_name_suffix=".parquet",
                num_shards=1,
            )
        )

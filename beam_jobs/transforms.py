"""Small Beam transforms around the pure ``pipeline`` library."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.metrics import Metrics

from pipeline.models.base import ModelError, SegmentationModel
from pipeline.models.spec import ModelSpec, shared_model
from pipeline.models.torchscript import sidecar_path
from pipeline.outputs.schemas import TABLES, conform, sort_rows
from pipeline.process import ProcessConfig, SeriesResult, base_series_row, error_row, process_series
from pipeline.uids import uid_problem

logger = logging.getLogger(__name__)


def localized_spec(spec: ModelSpec) -> ModelSpec:
    """The spec with a gs:// model copied to this worker's disk once (file + sidecar, or folder)."""
    if spec.path is None or "://" not in spec.path:
        return spec
    with _LOCALIZE_LOCK:
        local = _LOCALIZED.get(spec.path)
        if local is None:
            local = _LOCALIZED[spec.path] = _copy_model(spec.path)
    return dataclasses.replace(spec, path=local)


_LOCALIZED: dict[str, str] = {}
_LOCALIZE_LOCK = threading.Lock()


def _copy_model(url: str) -> str:
    target = tempfile.mkdtemp(prefix="lnq-model-")
    base = url.rstrip("/")
    if FileSystems.exists(base):  # one file (TorchScript); otherwise a folder (nnU-Net)
        sources = [base]
        sidecar = sidecar_path(base)
        if FileSystems.exists(sidecar):
            sources.append(sidecar)
        for source in sources:
            _copy_one(source, os.path.join(target, os.path.basename(source)))
        return os.path.join(target, os.path.basename(base))
    folder = os.path.join(target, os.path.basename(base))
    for meta in FileSystems.match([f"{base}/**"])[0].metadata_list:
        relative = meta.path[len(base) + 1 :]
        _copy_one(meta.path, os.path.join(folder, relative))
    return folder


def _copy_one(source: str, destination: str) -> None:
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    with FileSystems.open(source) as src, open(destination, "wb") as dst:
        while chunk := src.read(16 << 20):
            dst.write(chunk)


def check_model_reachable(spec: ModelSpec) -> None:
    """Load a local model once on the launcher (fail fast); a gs:// model must at least exist."""
    assert spec.path is not None
    if "://" in spec.path:
        if not FileSystems.match([spec.path.rstrip("/") + "*"])[0].metadata_list:
            raise ModelError(f"model {spec.path} does not exist")
        return
    shared_model(spec)


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
            self._model = shared_model(localized_spec(self._config.model))

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
    error = error_row(uid, "unexpected", RuntimeError(exc_repr), model=model)
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

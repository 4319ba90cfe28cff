"""The facts of a run that its tables do not hold, kept under ``OUTPUT/_lnq/run.json``.

When the run started and finished, its wall time, how many series it processed and how many it
found done already: what the report's "series per hour" needs. Written once the tables are
published, read by ``lnq report``, so that a report written later is the same page as the one
``lnq run --report`` wrote. Facts that do not describe the published tables (a run whose publish
failed after an earlier run's facts were written) are not used.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_jobs.store import WORK_AREA, write_atomically
from pipeline.outcome import REFERENCE_LABEL

logger = logging.getLogger(__name__)

FACTS_FILE = "run.json"
MAX_FACTS_BYTES = 64 << 10
"""Read back from disk, so bounded: the facts are a few hundred bytes."""

_NUMBERS = ("wall_s", "n_series", "n_processed", "n_resumed")
_TEXTS = ("started_at", "finished_at", "model")


def facts_path(output: str) -> str:
    return f"{output}/{WORK_AREA}/{FACTS_FILE}"


def run_facts(
    *, started: dt.datetime, n_series: int, n_processed: int, model: str, finished: dt.datetime | None = None
) -> dict[str, Any]:
    """The facts of a run that started at ``started`` and ends now (or at ``finished``)."""
    finished = finished or dt.datetime.now(dt.timezone.utc)
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "wall_s": round((finished - started).total_seconds(), 3),
        "n_series": int(n_series),
        "n_processed": int(n_processed),
        "n_resumed": int(n_series) - int(n_processed),
        "model": model,
    }


def write_run_facts(output: str, facts: dict[str, Any]) -> None:
    write_atomically(facts_path(output), json.dumps(facts, sort_keys=True, indent=1).encode())


def read_run_facts(output: str) -> dict[str, Any] | None:
    """The facts of the run that published ``output``'s tables, or None (absent, unreadable, or
    of another run: their series count differs from the table's)."""
    path = facts_path(output)
    if not FileSystems.exists(path):
        return None
    try:
        with FileSystems.open(path) as f:
            data = f.read(MAX_FACTS_BYTES + 1)
        if len(data) > MAX_FACTS_BYTES:
            raise ValueError(f"over {MAX_FACTS_BYTES} bytes")
        facts = json.loads(data)
        if not isinstance(facts, dict):
            raise ValueError("not a JSON object")
        checked = {k: float(facts[k]) if k == "wall_s" else int(facts[k]) for k in _NUMBERS}
        checked.update({k: str(facts[k]) for k in _TEXTS})
    except (ValueError, KeyError, TypeError, OSError) as exc:
        logger.warning("run facts %s are not usable (%s); the report goes without them", path, exc)
        return None
    n_rows = _series_rows(output)
    if n_rows != checked["n_series"]:
        logger.warning(
            "run facts %s describe %d series, the published table has %s; the report goes without them",
            path,
            checked["n_series"],
            n_rows,
        )
        return None
    return checked


def _series_rows(output: str) -> int | None:
    matches = FileSystems.match([f"{output}/series/*.parquet"])[0].metadata_list
    total = 0
    for meta in matches:
        with FileSystems.open(meta.path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total if matches else None


def node_counts(output: str) -> tuple[int, int | None]:
    """Nodes in the published ``nodes`` table by source: (reference, prediction); prediction is
    None when no series ran a model. Counted from the small ``series`` table's per-series counts."""
    n_reference, n_prediction, with_model = 0, 0, False
    for meta in FileSystems.match([f"{output}/series/*.parquet"])[0].metadata_list:
        with FileSystems.open(meta.path) as f:
            table = pq.read_table(f, columns=["status", "model", "n_reference_nodes", "n_prediction_nodes"])
        for row in table.to_pylist():
            with_model = with_model or row["model"] != REFERENCE_LABEL
            if row["status"] == "ok":
                n_reference += row["n_reference_nodes"] or 0
                n_prediction += row["n_prediction_nodes"] or 0
    return n_reference, (n_prediction if with_model else None)

"""The facts of a published run that its tables do not hold, kept under ``OUTPUT/_lnq/run.json``.

When the run started and finished, its wall time, how many series it processed and how many it
found done already (what the report's "series per hour" needs), how many were ok, its nodes by
source, its settings key, and the token of the lock it held. The job's last step writes them once
the tables are published; the launcher reads them for its summary (the token tells them from an
earlier run's), and ``lnq report`` for the report, so that a report written later is the same page
as the one ``lnq run --report`` wrote. Read back from disk, so bounded and checked; facts that do not
describe the published tables (their series count differs) are not used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_jobs.store import write_atomically
from pipeline.outputs.layout import OutputLayout

logger = logging.getLogger(__name__)

MAX_FACTS_BYTES = 64 << 10
"""Read back from disk, so bounded: the facts are a few hundred bytes."""


@dataclass(frozen=True)
class RunSummary:
    """What a published run did."""

    started_at: str
    finished_at: str
    wall_s: float
    n_series: int
    n_processed: int
    n_ok: int
    model: str
    output: str
    n_reference_nodes: int = 0
    n_prediction_nodes: int | None = None
    """None in reference mode (no model ran)."""
    settings_key: str = ""
    pipeline_version: str = ""
    token: str = ""
    report: str | None = None

    @property
    def n_resumed(self) -> int:
        return self.n_series - self.n_processed

    @property
    def n_failed(self) -> int:
        return self.n_series - self.n_ok

    @property
    def series_per_hour(self) -> float | None:
        """Series this run processed per hour of its wall time (resumed series left out)."""
        return 3600.0 * self.n_processed / self.wall_s if self.wall_s > 0 and self.n_processed else None

    @property
    def nodes_text(self) -> str:
        """'12 reference and 15 prediction nodes': the two count different things, never added up."""
        if self.n_prediction_nodes is None:
            return f"{self.n_reference_nodes} reference nodes"
        return f"{self.n_reference_nodes} reference and {self.n_prediction_nodes} prediction nodes"

    def report_info(self) -> dict[str, Any]:
        """What the report reads of the run (``pipeline.report.summarise``'s ``run_info``)."""
        return {**dataclasses.asdict(self), "n_resumed": self.n_resumed}


_INTS = ("n_series", "n_processed", "n_ok", "n_reference_nodes")
_TEXTS = ("started_at", "finished_at", "model", "output", "settings_key", "pipeline_version", "token")


def facts_path(output: str) -> str:
    return OutputLayout(output).run_facts


def write_run_facts(output: str, summary: RunSummary) -> None:
    data = json.dumps(dataclasses.asdict(summary), sort_keys=True, indent=1).encode()
    write_atomically(facts_path(output), data)


def _checked(raw: Any) -> RunSummary:
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    values: dict[str, Any] = {k: int(raw[k]) for k in _INTS}
    values.update({k: str(raw.get(k, "")) for k in _TEXTS})
    values["wall_s"] = float(raw["wall_s"])
    prediction = raw.get("n_prediction_nodes")
    values["n_prediction_nodes"] = None if prediction is None else int(prediction)
    values["report"] = None if raw.get("report") is None else str(raw["report"])
    if not 0 <= values["n_ok"] <= values["n_series"] or not 0 <= values["n_processed"] <= values["n_series"]:
        raise ValueError("counts that do not add up")
    return RunSummary(**values)


def read_run_facts(output: str) -> RunSummary | None:
    """The facts of the run that published ``output``'s tables, or None (absent, unreadable, or of
    another run: their series count differs from the table's)."""
    path = facts_path(output)
    if not FileSystems.exists(path):
        return None
    try:
        with FileSystems.open(path) as f:
            data = f.read(MAX_FACTS_BYTES + 1)
        if len(data) > MAX_FACTS_BYTES:
            raise ValueError(f"over {MAX_FACTS_BYTES} bytes")
        facts = _checked(json.loads(data))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        logger.warning("run facts %s are not usable (%s); going without them", path, exc)
        return None
    n_rows = _series_rows(output)
    if n_rows != facts.n_series:
        logger.warning(
            "run facts %s describe %d series, the published table has %s; going without them",
            path,
            facts.n_series,
            n_rows,
        )
        return None
    return facts


def _series_rows(output: str) -> int | None:
    matches = FileSystems.match([OutputLayout(output).table_files("series")])[0].metadata_list
    total = 0
    for meta in matches:
        with FileSystems.open(meta.path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total if matches else None

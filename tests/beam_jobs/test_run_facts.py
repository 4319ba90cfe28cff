"""The run's facts under OUTPUT/_lnq/run.json: written after a publish, used only for its tables."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq

from beam_jobs.run_facts import MAX_FACTS_BYTES, RunSummary, facts_path, read_run_facts, write_run_facts
from pipeline.report import summarise
from tests.pipeline.report.synthetic import random_tables

START = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def run_facts(
    *, started: dt.datetime, n_series: int, n_processed: int, model: str, finished=None
) -> RunSummary:  # type: ignore[no-untyped-def]
    finished = finished or started + dt.timedelta(seconds=60)
    return RunSummary(
        started_at=started.isoformat(timespec="seconds"),
        finished_at=finished.isoformat(timespec="seconds"),
        wall_s=(finished - started).total_seconds(),
        n_series=n_series,
        n_processed=n_processed,
        n_ok=n_series,
        model=model,
        output="out",
        n_reference_nodes=3,
        n_prediction_nodes=4,
        token="t",
    )


def _output(tmp_path: Path, n: int = 12) -> Path:
    series, nodes, _ = random_tables(n, model="torchscript:m.pt", failed_every=4)
    for name, table in (("series", series), ("nodes", nodes)):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp_path / name / "part-00000-of-00001.parquet")
    return tmp_path


def test_facts_round_trip_and_drive_the_rate(tmp_path: Path) -> None:
    out = _output(tmp_path)
    facts = run_facts(
        started=START, n_series=12, n_processed=4, model="m", finished=START + dt.timedelta(seconds=90)
    )
    write_run_facts(str(out), facts)
    read = read_run_facts(str(out))
    assert read == facts and read.wall_s == 90.0 and read.n_resumed == 8
    assert read.nodes_text == "3 reference and 4 prediction nodes"
    series, _, errors = random_tables(12, model="torchscript:m.pt", failed_every=4)
    overview = summarise(series, errors, run_info=read.report_info()).overview
    assert overview.series_per_hour == 4 / 90.0 * 3600.0  # the series this run processed, not the resumed
    assert overview.n_resumed == 8 and "8 resumed" in overview.rate_basis


def test_facts_of_another_run_or_unreadable_are_not_used(tmp_path: Path) -> None:
    out = _output(tmp_path)
    assert read_run_facts(str(out)) is None  # none written
    write_run_facts(str(out), run_facts(started=START, n_series=99, n_processed=99, model="m"))
    assert read_run_facts(str(out)) is None  # 99 series: not the published table's 12
    Path(facts_path(str(out))).write_text("[1, 2]")
    assert read_run_facts(str(out)) is None
    Path(facts_path(str(out))).write_text(json.dumps({"pad": "x" * MAX_FACTS_BYTES}))
    assert read_run_facts(str(out)) is None


def test_the_detection_threshold_enters_the_settings_key_with_a_model(tmp_path: Path) -> None:
    """A rerun with another --iou-threshold must not resume the series scored with the old one."""
    from beam_jobs.settings_key import run_key
    from pipeline.demo.model import HuWindow, save_torchscript
    from pipeline.models.spec import parse_model_spec
    from pipeline.process import ProcessConfig

    model = save_torchscript(HuWindow(40.0, 70.0), tmp_path / "m.pt")
    spec = parse_model_spec(f"torchscript:{model}")
    key, settings = run_key(ProcessConfig(model=spec))
    other, _ = run_key(ProcessConfig(model=spec, iou_threshold=0.3))
    assert settings["iou_threshold"] == 0.1 and key != other
    # the reference mode detects nothing: its results (and key) do not depend on the threshold
    assert run_key(ProcessConfig())[0] == run_key(ProcessConfig(iou_threshold=0.3))[0]

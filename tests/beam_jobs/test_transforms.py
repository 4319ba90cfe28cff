"""Beam wiring at three levels: process() called directly, TestPipeline, dead letters."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

import beam_jobs.transforms as transforms
from beam_jobs.job_graph import ProcessCohort
from beam_jobs.transforms import ProcessSeriesFn, SeriesDone, dead_letter_to_result
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.process import ProcessConfig
from tests.support.cohort import cohort_row

CONFIG = ProcessConfig(fetch=FetchConfig(endpoint_url="http://127.0.0.1:9", attempts=1))


def _rows(phantom) -> list[dict]:
    good = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    bad = cohort_row(
        phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path), ct_series_instance_uid="1.2.3.4"
    )
    return [good, bad]


def test_process_called_directly(phantom, tmp_path: Path) -> None:
    fn = ProcessSeriesFn(CONFIG, total=1, progress_dir=str(tmp_path))
    (out,) = list(fn.process(_rows(phantom)[0]))
    assert out == SeriesDone(series_uid=phantom.series_uid, status="ok", n_nodes=3, errors=())
    assert len(list(tmp_path.iterdir())) == 1  # one progress marker


def test_pipeline_gives_one_result_per_row(phantom) -> None:
    rows = _rows(phantom)
    with BeamTestPipeline(runner="FnApiRunner") as p:
        statuses = (
            p
            | beam.Create(rows)
            | ProcessCohort(ProcessSeriesFn(CONFIG, total=len(rows)), config=CONFIG)
            | beam.Map(lambda r: (r.series_uid, r.status, len(r.errors)))
        )
        assert_that(
            statuses,
            equal_to([(phantom.series_uid, "ok", 0), ("1.2.3.4", "error", 1)]),
        )


def _crash_on_bad(raw, **kwargs):  # type: ignore[no-untyped-def]
    if raw["ct_series_instance_uid"] == "1.2.3.4":
        raise MemoryError("simulated worker crash")
    return _real_process_series(raw, **kwargs)


_real_process_series = transforms.process_series


def test_crash_outside_handlers_goes_to_dead_letter_and_is_kept(
    phantom, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transforms, "process_series", _crash_on_bad)
    rows = _rows(phantom)
    with BeamTestPipeline(runner="FnApiRunner") as p:
        out = (
            p
            | beam.Create(rows)
            | ProcessCohort(ProcessSeriesFn(CONFIG, total=len(rows)), config=CONFIG)
            | beam.Map(lambda r: (r.series_uid, r.status, list(r.errors)))
        )
        assert_that(
            out,
            equal_to([(phantom.series_uid, "ok", []), ("1.2.3.4", "error", [("unexpected", "MemoryError")])]),
        )


def test_dead_letter_row_names_the_series() -> None:
    raw = {"ct_series_instance_uid": "1.2.3", "patient_id": "p"}
    out = dead_letter_to_result((raw, (ValueError, "ValueError('x')", ["tb"])), "0.1.0", "reference")
    assert out.series["status"] == "error"
    assert out.errors[0]["message"] == "series 1.2.3: ValueError('x')"
    assert out.errors[0]["error_type"] == "ValueError"
    assert out.errors[0]["stage"] == "unexpected"


def test_model_loaded_once_per_process_through_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every copy of the DoFn in a process (Beam pickles one per thread and bundle) and the
    launcher's fail-fast check share one loaded model through Beam's Shared handle."""
    import pickle

    from apache_beam.utils.shared import Shared

    from pipeline.models.spec import parse_model_spec
    from tests.support.models import HuWindow, save_torchscript

    calls: list[object] = []
    real = transforms.open_model
    monkeypatch.setattr(transforms, "open_model", lambda spec: calls.append(spec) or real(spec))
    path = save_torchscript(HuWindow(40.0, 70.0), tmp_path / "window.pt")
    spec = parse_model_spec(f"torchscript:{path}", device="cpu")
    assert spec is not None
    shared = Shared()
    transforms.check_model_reachable(spec, shared)
    config = ProcessConfig(model=spec)
    copies = [pickle.loads(pickle.dumps(ProcessSeriesFn(config, total=1, shared=shared))) for _ in range(4)]
    for fn in copies:
        fn.setup()
    assert len(calls) == 1
    assert all(fn._model is copies[0]._model is not None for fn in copies)
    assert copies[0]._model.starts == 1  # one model host, the model loaded once in it
    copies[0]._model.close()


def test_a_series_with_many_nodes_passes_only_a_summary_and_its_rows_go_to_the_store(
    phantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that predicts noise can give one series 88,000 nodes (112 MB of rows); such rows
    passed through Beam broke its in-process runner, so the pipeline carries a summary of the same
    small size whatever the node count, and the store keeps every row."""
    import pickle

    from beam_jobs.store import ResultStore
    from pipeline.outputs.rows import OutcomeRows

    real_rows = transforms.outcome_rows

    def many_nodes(outcome):  # type: ignore[no-untyped-def]
        rows = real_rows(outcome)
        node = rows.nodes[0]
        return OutcomeRows(
            series=rows.series,
            nodes=[{**node, "node_index": i + 1} for i in range(50_000)],
            errors=rows.errors,
        )

    monkeypatch.setattr(transforms, "outcome_rows", many_nodes)
    store = ResultStore(str(tmp_path / "out"), "k")
    fn = ProcessSeriesFn(CONFIG, total=1, store=store)
    (done,) = list(fn.process(_rows(phantom)[0]))
    assert done == SeriesDone(series_uid=phantom.series_uid, status="ok", n_nodes=50_000, errors=())
    assert len(pickle.dumps(done)) < 1000
    kept = store.read([phantom.series_uid])[phantom.series_uid].rows
    assert len(kept.nodes) == 50_000 and kept.nodes[-1]["node_index"] == 50_000


def test_the_file_sink_copies_a_made_file_whole_or_not_at_all(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The series' files reach the output by path, a block at a time; a copy that fails part-way
    leaves the file a previous run stored, and no temporary file."""
    import os

    import beam_jobs.store as store
    from beam_jobs.transforms import OutputFileSink

    uid = "1.2.826.0.1.3680043.8.498.1"
    made = tmp_path / "made.dcm"
    made.write_bytes(os.urandom(3 * store.COPY_BLOCK_BYTES + 5))
    sink = OutputFileSink(str(tmp_path / "out"))
    assert sink("seg", uid, str(made)) == f"seg/{uid}.dcm"  # relative to the output
    stored = tmp_path / "out" / "seg" / f"{uid}.dcm"
    assert stored.read_bytes() == made.read_bytes()
    assert sink.written == [store.FileRecord(f"seg/{uid}.dcm", *store.file_identity(str(stored)))]

    made.write_bytes(b"new" * 1000)
    real_open = open

    class Torn:
        def __init__(self, f):  # type: ignore[no-untyped-def]
            self.f = f

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            self.f.close()

        def read(self, n):  # type: ignore[no-untyped-def]
            data = self.f.read(10)
            if not data:
                raise OSError("disk full (simulated)")
            return data

    def torn_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        f = real_open(path, mode, *args, **kwargs)
        return Torn(f) if str(path) == str(made) else f

    monkeypatch.setattr("builtins.open", torn_open)
    with pytest.raises(OSError, match="disk full"):
        sink("seg", uid, str(made))
    monkeypatch.setattr("builtins.open", real_open)
    assert stored.stat().st_size == 3 * store.COPY_BLOCK_BYTES + 5  # the earlier file, whole
    assert os.listdir(stored.parent) == [stored.name]
    with pytest.raises(ValueError, match="refusing to name a file"):
        sink("seg", "../evil", str(made))

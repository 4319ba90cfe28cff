"""``lnq run`` starts the series' fork server before its own imports, unless the series run in other
processes (Dataflow, Beam's local multi_processing mode)."""

from __future__ import annotations

import pytest

from beam_jobs import cli


@pytest.mark.parametrize(
    ("args", "here"),
    [
        ([], True),
        (["--runner", "DirectRunner"], True),
        (["--runner=PrismRunner", "--workers", "2"], True),
        (["--direct_running_mode=multi_threading", "--direct_num_workers=2"], True),
        (["--runner", "DataflowRunner", "--project", "p"], False),
        (["--cohort", "c.parquet", "--runner=DataflowRunner"], False),
        (["--runner=dataflow"], False),
        (["--direct_running_mode", "multi_processing", "--direct_num_workers=2"], False),
        (["--direct_running_mode=multi_processing"], False),
        (["--runner"], True),  # a missing value is Beam's to refuse
    ],
)
def test_where_the_series_run_is_read_before_beam_is_imported(args: list[str], here: bool) -> None:
    assert cli._series_run_in_this_process(args) is here


@pytest.mark.parametrize(("runner", "started"), [("DirectRunner", True), ("DataflowRunner", False)])
def test_fork_server_starts_before_the_job_is_imported(monkeypatch, runner: str, started: bool) -> None:
    """The fork server's preload (about 1.7 s) overlaps the job's start-up: it is started before
    ``beam_jobs.launch`` is imported and run, and not at all when Dataflow runs the series."""
    import beam_jobs.launch
    import pipeline.isolation

    events: list[str] = []
    monkeypatch.setattr(pipeline.isolation, "start_fork_server", lambda: events.append("fork server"))

    def fake_run(argv: list[str]) -> beam_jobs.launch.Submitted:
        events.append("run")
        return beam_jobs.launch.Submitted("submitted")

    monkeypatch.setattr(beam_jobs.launch, "run", fake_run)
    assert cli.main(["run", "--output", "out", "--runner", runner]) == 0
    assert events == (["fork server", "run"] if started else ["run"])


def test_the_launcher_leaves_the_decoders_to_the_fork_server() -> None:
    """Importing the job loads Beam but not what the series' children use (pydicom, highdicom,
    scipy, matplotlib, torch): those are the fork server's preload, not the launcher's start-up."""
    import subprocess
    import sys

    heavy = ("pydicom", "highdicom", "scipy", "matplotlib", "torch")
    probe = f"import sys, beam_jobs.launch; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_detection_threshold_out_of_range_is_a_usage_error(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from beam_jobs.cli import main

    code = main(["run", "--output", str(tmp_path / "out"), "--iou-threshold", "1.5"])
    assert code == 2
    assert "--iou-threshold 1.5: expected an IoU in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

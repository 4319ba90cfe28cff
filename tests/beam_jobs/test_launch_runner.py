"""Runner names as Beam accepts them (any case, ``Runner`` optional): the launcher's checks by name
(local or remote, Dataflow or not) must see the runner Beam will run, and only Dataflow's dry run
checks a job without running it."""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from beam_jobs.cli import main
from beam_jobs.launch import check_runner_setup, pipeline_options
from beam_jobs.options import UsageError
from tests.support.cohort import cohort_row, write_cohort
from tests.support.phantoms import Phantom


@pytest.mark.parametrize(
    ("given", "spelled"),
    [
        ("direct", "DirectRunner"),
        ("directrunner", "DirectRunner"),
        ("FNAPIRUNNER", "FnApiRunner"),
        ("dataflow", "DataflowRunner"),
        ("apache_beam.runners.direct.direct_runner.DirectRunner", "DirectRunner"),
        ("DataflowRunner", "DataflowRunner"),
    ],
)
def test_a_runner_is_spelled_as_beam_spells_it(given: str, spelled: str) -> None:
    options = pipeline_options([f"--runner={given}", "--project=my-project"], workers=1)
    assert options.view_as(StandardOptions).runner == spelled


def test_a_lower_case_dataflow_runner_gets_the_code_shipped() -> None:
    """``--runner dataflow`` runs on Dataflow: its workers need this package as DataflowRunner's do."""
    options = pipeline_options(["--runner", "dataflow", "--project=my-project"], workers=1)
    assert options.view_as(SetupOptions).setup_file


@pytest.mark.parametrize("runner", ["FlinkRunner", "PortableRunner", "SparkRunner"])
def test_only_dataflow_checks_a_job_without_running_it(runner: str) -> None:
    options = PipelineOptions([f"--runner={runner}", "--dry_run=True", "--temp_location=gs://b/tmp"])
    with pytest.raises(UsageError, match="only Dataflow checks a job without running it"):
        check_runner_setup(
            options, runner, output="gs://b/o", output_as_given="gs://b/o", reads=[], what="lnq run"
        )


@pytest.mark.parametrize("command", ["run", "export-training"])
def test_a_dry_run_on_a_local_runner_named_in_lower_case_is_refused_and_touches_nothing(  # type: ignore[no-untyped-def]
    command: str, gcs_bucket: str, phantom: Phantom, tmp_path: Path, capsys
) -> None:
    """``--runner direct`` is Beam's DirectRunner: a dry run on it would run the job, writing cases
    (or series) to the output without its lock."""
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    cohort = tmp_path / "cohort.parquet"
    write_cohort(cohort, [row])
    output = f"gs://{gcs_bucket}/runner-names/{command}"
    code = main(
        [command, "--cohort", str(cohort), "--output", output, "--runner", "direct", "--dry_run", "True"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1] == (
        f"lnq {command}: error: --dry_run: only Dataflow checks a job without running it; DirectRunner "
        "would run it (leave out --dry_run, or add --runner DataflowRunner)"
    )
    assert not FileSystems.match([f"{output}/**"])[0].metadata_list

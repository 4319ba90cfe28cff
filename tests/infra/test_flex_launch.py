"""The flex template launches as Google's Python launcher runs it, offline against the storage emulator.

Google's launcher runs ``FLEX_TEMPLATE_PYTHON_PY_FILE`` (``beam_jobs/flex_main.py``) with the
template's parameters as ``--name=value``, the launch environment's options (the worker image,
project, region, temp and staging locations) and ``--template_location``: Beam writes the job file
there and no job runs in the launcher. The launch must exit 0, write no table, hold the output's
lock for the job, and describe workers that run this package on machines that hold the GPUs asked
for. A dry run on the Dataflow runner exits 0 too, and code that would reach workers without this
package is refused.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems

from beam_jobs.cli import main
from tests.support.cohort import cohort_row, write_cohort

REPO = Path(__file__).resolve().parents[2]
IMAGE = "us-central1-docker.pkg.dev/my-project/lnq/lnq-worker:0.1.0"


@pytest.fixture(scope="module")
def launch_cohort(gcs_bucket: str, phantom, upload_series) -> str:  # type: ignore[no-untyped-def]
    """A cohort on Cloud Storage whose series are in the (local) S3 bucket, as IDC's are."""
    row = cohort_row(phantom, ct_url=upload_series(phantom.ct_dir), seg_url=upload_series(phantom.seg_path))
    buffer = io.BytesIO()
    write_cohort(buffer, [row])
    path = f"gs://{gcs_bucket}/cohorts/launch.parquet"
    with FileSystems.create(path) as f:
        f.write(buffer.getvalue())
    return path


def _launch(parameters: dict[str, str], template: Path, bucket: str) -> subprocess.CompletedProcess[str]:
    """The launcher's call: parameters, the launch environment's options, then --template_location."""
    environment = {
        "sdk_container_image": IMAGE,
        "project": "my-project",
        "region": "us-central1",
        "temp_location": f"gs://{bucket}/tmp",
        "staging_location": f"gs://{bucket}/staging",
    }
    argv = [f"--{k}={v}" for k, v in {**parameters, **environment}.items()]
    argv.append(f"--template_location={template}")
    return subprocess.run(
        [sys.executable, str(REPO / "beam_jobs" / "flex_main.py"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(template.parent),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _only_the_lock(output: str, *, locked: str) -> dict:  # type: ignore[type-arg]
    """What a launch left under ``output``: only the lock of ``locked``, handed to the job; its job."""
    written = [m.path for m in FileSystems.match([f"{output}/**"])[0].metadata_list]
    assert written == [f"{locked}/_lnq/lock.json"]
    with FileSystems.open(f"{locked}/_lnq/lock.json") as f:
        return json.loads(f.read())["job"]  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("gpu", "machine", "accelerator"),
    [
        ("nvidia-l4:1", "g2-standard-8", "type:nvidia-l4;count:1;install-nvidia-driver"),
        ("nvidia-l4:2", "g2-standard-24", "type:nvidia-l4;count:2;install-nvidia-driver"),
        ("", None, None),  # a CPU run: the DAG renders gpu="" and the template accepts it
    ],
    ids=["l4x1", "l4x2", "cpu"],
)
def test_the_template_launches_as_googles_launcher_runs_it(  # type: ignore[no-untyped-def]
    gcs_bucket: str, launch_cohort: str, s3_endpoint: str, tmp_path: Path, gpu, machine, accelerator
) -> None:
    output = f"gs://{gcs_bucket}/runs/flex-{gpu.replace(':', '-') or 'cpu'}"
    parameters = {
        "cohort": launch_cohort,
        "output": output,
        "model": "reference",
        "gpu": gpu,
        "s3_endpoint": s3_endpoint,
        "series_per_worker": "3",
        "tta": "true",
        "fresh": "false",
    }
    done = _launch(parameters, tmp_path / "job.json", gcs_bucket)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote the job file {tmp_path / 'job.json'}" in done.stdout
    assert "Traceback" not in done.stderr

    # nothing published at launch: the job publishes as its last step
    job_lock = _only_the_lock(output, locked=output)
    assert job_lock["runner"] == "DataflowRunner" and job_lock["project"] == "my-project"

    job = json.loads((tmp_path / "job.json").read_text())
    options = job["environment"]["sdkPipelineOptions"]["options"]
    (pool,) = job["environment"]["workerPools"]
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert [c["containerImage"] for c in pool["sdkHarnessContainerImages"]] == [IMAGE]
    assert options["number_of_worker_harness_threads"] == 3
    if accelerator is None:
        assert not job["environment"].get("serviceOptions") and not options.get("dataflow_service_options")
        assert "machineType" not in pool
    else:
        assert job["environment"]["serviceOptions"] == [f"worker_accelerator={accelerator}"]
        assert pool["machineType"] == machine
        assert "no_use_multiple_sdk_containers" in job["environment"]["experiments"]

    # a second launch while the job holds the output is refused in one line, exit 1
    again = _launch(parameters, tmp_path / "again.json", gcs_bucket)
    assert again.returncode == 1, again.stderr[-2000:]
    assert "is being written by a DataflowRunner job" in again.stderr
    assert not (tmp_path / "again.json").exists()


@pytest.mark.slow
def test_a_dry_run_on_dataflow_exits_0_and_touches_nothing(  # type: ignore[no-untyped-def]
    gcs_bucket: str, launch_cohort: str, capsys
) -> None:
    output = f"gs://{gcs_bucket}/runs/dry"
    code = main(
        [
            "run",
            "--cohort",
            launch_cohort,
            "--output",
            output,
            "--runner",
            "DataflowRunner",
            "--dry_run",
            "True",
            "--project",
            "my-project",
            "--region",
            "us-central1",
            "--temp_location",
            f"gs://{gcs_bucket}/tmp",
            "--gpu",
            "nvidia-tesla-t4",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "dry run: the DataflowRunner job for 1 cohort rows was built and checked" in out
    assert not FileSystems.match([f"{output}/**"])[0].metadata_list


def test_an_installed_package_without_an_image_is_refused(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """pip-installed lnq has no setup.py to ship: without --sdk_container_image workers would run
    Beam's stock image, so the launch is refused in one line (exit 2) before anything else."""
    import beam_jobs.launch

    monkeypatch.setattr(beam_jobs.launch, "repo_setup_file", lambda: None)
    code = main(
        [
            "run",
            "--output",
            "gs://bkt/run",
            "--runner",
            "DataflowRunner",
            "--project",
            "my-project",
            "--region",
            "us-central1",
            "--temp_location",
            "gs://bkt/tmp",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "lnq run: error: Dataflow workers would get no lnq code: pass --sdk_container_image=IMAGE "
        "(the worker image, `make image`) or run from a checkout (its setup.py is shipped)"
    ]


@pytest.mark.slow
def test_the_template_launches_the_training_export(  # type: ignore[no-untyped-def]
    gcs_bucket: str, launch_cohort: str, s3_endpoint: str, tmp_path: Path
) -> None:
    """command=export-training: the same launch writes the export's job file, hands the dataset's
    lock to the job (which finishes the dataset as its last step) and writes nothing else."""
    output = f"gs://{gcs_bucket}/training/flex"
    parameters = {
        "command": "export-training",
        "cohort": launch_cohort,
        "output": output,
        "s3_endpoint": s3_endpoint,
        "dataset_id": "502",
        "partial_background": "none",
        "gpu": "",  # as a form that lists every parameter sends it
        "fresh": "false",
    }
    done = _launch(parameters, tmp_path / "export.json", gcs_bucket)
    assert done.returncode == 0, done.stderr[-3000:]
    dataset = f"{output}/Dataset502_LNQ"
    assert (
        f"wrote the job file {tmp_path / 'export.json'} (1 cohort rows); the job holds the lock of {dataset}"
        in (done.stdout)
    )
    assert "finishes the dataset as its last step" in done.stdout
    job_lock = _only_the_lock(output, locked=dataset)
    assert job_lock["runner"] == "DataflowRunner" and job_lock["region"] == "us-central1"
    job = json.loads((tmp_path / "export.json").read_text())
    (pool,) = job["environment"]["workerPools"]
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert not job["environment"].get("serviceOptions")  # the export runs on CPU workers

    again = _launch(parameters, tmp_path / "again.json", gcs_bucket)
    assert again.returncode == 1, again.stderr[-2000:]
    assert "is being written by a DataflowRunner job" in again.stderr
    refused = _launch({**parameters, "model": "nnunet:gs://b/m"}, tmp_path / "refused.json", gcs_bucket)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "lnq flex template: error: parameter model is not an option of lnq export-training "
        "(command=export-training); leave it out or empty"
    )


@pytest.mark.slow
def test_a_dry_run_of_the_export_on_dataflow_exits_0_and_touches_nothing(  # type: ignore[no-untyped-def]
    gcs_bucket: str, launch_cohort: str, capsys
) -> None:
    output = f"gs://{gcs_bucket}/training/dry"
    cloud = [
        "--project",
        "my-project",
        "--region",
        "us-central1",
        "--temp_location",
        f"gs://{gcs_bucket}/tmp",
    ]
    code = main(
        ["export-training", "--cohort", launch_cohort, "--output", output, "--runner", "DataflowRunner"]
        + ["--dry_run", "True", *cloud]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (
        "dry run: the DataflowRunner export of 1 cohort rows was built and checked; nothing was submitted"
        in out
    )
    assert not FileSystems.match([f"{output}/**"])[0].metadata_list


@pytest.mark.parametrize("command", ["run", "export-training"])
def test_a_dry_run_on_the_local_runner_is_refused(command: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Only Dataflow checks a job without running it: a local runner would run it."""
    code = main([command, "--output", str(tmp_path / "out"), "--dry_run", "True"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        f"lnq {command}: error: --dry_run: only Dataflow checks a job without running it; FnApiRunner "
        "would run it (leave out --dry_run, or add --runner DataflowRunner)"
    ]
    assert not (tmp_path / "out").exists()

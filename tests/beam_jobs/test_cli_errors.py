"""Cloud mistakes are one line with the documented exit code, found before any lock or client.

No Google Cloud credentials exist here (as on a new user's machine): ``GOOGLE_APPLICATION_CREDENTIALS``
is unset, gcloud's configuration folder is empty and the metadata server is not asked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from beam_jobs.cli import main

FIX = "run `gcloud auth application-default login`"
DATAFLOW = ["--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1"]


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    from apache_beam.internal.gcp import auth

    monkeypatch.setattr(auth._Credentials, "_credentials_init", False)  # Beam has not looked yet

    def no_client(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a client was made before the arguments and credentials were checked")

    import google.cloud.bigquery

    monkeypatch.setattr(google.cloud.bigquery, "Client", no_client)


def _one_line(capsys) -> str:  # type: ignore[no-untyped-def]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Retry with exponential backoff" not in err, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("20")]  # log lines have a date
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["load-bigquery", "--output", "gs://bkt/runs/r", "--dataset", "my-project.lnq"], FIX),
        (
            ["load-bigquery", "--output", "gs://bkt/runs/r", "--dataset", "my-project"],
            "is not PROJECT.DATASET",
        ),
        (
            ["load-bigquery", "--output", "/local/run", "--dataset", "my-project.lnq"],
            "loads from Cloud Storage",
        ),
        (["load-bigquery", "--output", "gs://B/x", "--dataset", "my-project.lnq"], "valid bucket name"),
        (["load-bigquery", "--output", "gs://bkt//x", "--dataset", "my-project.lnq"], "valid bucket name"),
        (["run", "--output", "gs://bkt//runs/r"], "expected gs://BUCKET/FOLDER"),
        (["export-training", "--output", "gs://bkt/a//b"], "expected gs://BUCKET/FOLDER"),
        (["analytics", "--dataset", "my-project.lnq", "--query", "node_burden"], FIX),
        (["analytics", "--dataset", "my-project", "--query", "node_burden"], "is not PROJECT.DATASET"),
        (
            ["cohort", "--out", "c.parquet", "--bigquery-project", "Not_A_Project"],
            "is not a Google Cloud project id",
        ),
        (["cohort", "--out", "c.parquet", "--bigquery-project", "my-project"], FIX),
    ],
)
def test_bigquery_commands(argv: list[str], expected: str, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(argv) == 2
    assert expected in _one_line(capsys)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--temp_location", "gs://bkt/tmp"], FIX),  # Dataflow needs credentials: none
        (["--project", "Bad_Project", "--temp_location", "gs://bkt/tmp"], "is not a Google Cloud project id"),
        (["--gpu", "nvidia-l4:3", "--temp_location", "gs://bkt/tmp"], "one of nvidia-l4:1|2|4|8"),
        (["--gpu", "nvidia-rtx-4090", "--temp_location", "gs://bkt/tmp"], "expected TYPE[:COUNT]"),
    ],
)
def test_dataflow_launch_mistakes(extra: list[str], expected: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["run", "--output", "gs://bkt/runs/r", *DATAFLOW, *extra]) == 2
    assert expected in _one_line(capsys)


def test_beam_option_errors_are_one_line_before_the_lock(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """A Dataflow run without a temp location on Cloud Storage is refused before Beam would make a
    bucket of its own; Beam's own validation (a job name Dataflow refuses) runs in the plan."""
    import beam_jobs.launch
    from beam_jobs import credentials

    monkeypatch.setattr(credentials, "prepare_credentials", lambda **_: None)  # as if logged in
    taken = []
    monkeypatch.setattr(beam_jobs.launch.lock, "acquire", lambda *a, **k: taken.append(a))
    for extra in ([], ["--temp_location", "/local/tmp"]):
        assert main(["run", "--output", "gs://bkt/runs/r", *DATAFLOW, *extra]) == 2
        assert "a Dataflow job needs --temp_location gs://" in _one_line(capsys)
    # Beam's validation, with the bucket checks it makes answered by the storage emulator
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    from apache_beam.options import pipeline_options

    monkeypatch.setattr(
        pipeline_options.GoogleCloudOptions, "_warn_if_soft_delete_policy_enabled", lambda *_: None
    )
    argv = [
        "run",
        "--output",
        "gs://bkt/runs/r",
        *DATAFLOW,
        "--temp_location",
        "gs://bkt/t",
        "--job_name",
        "Bad_Name",
    ]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith("lnq run: error: Beam options: ") and "Bad_Name" in line
    assert not taken


def test_a_local_model_or_output_cannot_go_to_dataflow(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["run", "--output", "out", *DATAFLOW, "--temp_location", "gs://bkt/tmp"]) == 2
    assert "writes to Cloud Storage" in _one_line(capsys)
    argv = [
        "run",
        "--output",
        "gs://bkt/r",
        *DATAFLOW,
        "--temp_location",
        "gs://bkt/t",
        "--model",
        "torchscript:m.pt",
    ]
    assert main(argv) == 2
    assert "read the model from Cloud Storage" in _one_line(capsys)

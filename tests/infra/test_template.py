"""The worker image and the flex template agree with the code they ship (checked offline)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import apache_beam
import pytest

from beam_jobs.flex_main import (
    COMMAND_OPTIONS,
    OWN_OPTIONS,
    SHARED_OPTIONS,
    ParameterError,
    split_command,
    translate,
)

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "containers" / "worker" / "Dockerfile").read_text()
METADATA = json.loads((REPO / "infra" / "dataflow" / "metadata.json").read_text())


def _arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    assert match, f"Dockerfile has no ARG {name}"
    return match.group(1)


def test_image_carries_the_beam_sdk_at_the_launching_version() -> None:
    assert _arg("BEAM_VERSION") == apache_beam.__version__
    assert _arg("PYTHON_VERSION") == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam" in DOCKERFILE
    assert "COPY --from=beam /opt/apache/beam /opt/apache/beam" in DOCKERFILE
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in DOCKERFILE
    assert "python_template_launcher" in DOCKERFILE
    py_file = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=/app/(\S+)", DOCKERFILE).group(1)
    assert (REPO / py_file).is_file()
    for copied in re.findall(r"^COPY (?!--)(\S+)", DOCKERFILE, re.M):
        assert (REPO / copied).exists(), copied


def test_every_template_parameter_is_described_and_understood() -> None:
    names = [p["name"] for p in METADATA["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) == {*OWN_OPTIONS, "command", "sdk_container_image"}  # the image: a Beam option
    for p in METADATA["parameters"]:
        assert p["label"] and len(p["helpText"]) > 20 and "isOptional" in p, p["name"]
        for regex in p.get("regexes", []):
            re.compile(regex)
    assert not next(p for p in METADATA["parameters"] if p["name"] == "output")["isOptional"]


def test_parameters_translate_to_lnq_run_options() -> None:
    from beam_jobs.run_args import add_arguments

    argv = translate(
        [
            "--output=gs://b/r",
            "--model=nnunet:gs://b/m/Dataset1",
            "--s3_endpoint=https://storage.googleapis.com",
            "--series_per_worker=3",
            "--folds=0,1",
            "--tta=false",
            "--step_size=0.5",
            "--runner=DataflowRunner",
        ]
    )
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    assert args.s3_endpoint == "https://storage.googleapis.com" and args.series_per_worker == 3
    assert args.folds == ["0", "1"] and args.tta is False and args.step_size == 0.5
    assert beam_args == ["--runner=DataflowRunner"]


def _parser_options(command: str) -> set[str]:
    from beam_jobs.export_args import make_parser as export_parser
    from beam_jobs.run_args import make_parser as run_parser

    parser = run_parser() if command == "run" else export_parser()
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}


def test_every_parameter_is_an_option_of_the_command_it_is_declared_for() -> None:
    """Both commands take the shared parameters; each its own; none of the other's only ones."""
    for command, own in COMMAND_OPTIONS.items():
        options = _parser_options(command)
        for name in (*SHARED_OPTIONS, *own):
            assert f"--{name.replace('_', '-')}" in options, (command, name)
        (other,) = [names for c, names in COMMAND_OPTIONS.items() if c != command]
        assert not {f"--{n.replace('_', '-')}" for n in other} & options, command
    (command,) = [p for p in METADATA["parameters"] if p["name"] == "command"]
    assert all(re.fullmatch(command["regexes"][0], c) for c in (*COMMAND_OPTIONS, ""))


def test_the_command_parameter_picks_the_job_and_refuses_the_other_jobs_options() -> None:
    from beam_jobs.export_args import make_parser

    command, rest = split_command(
        [
            "--command=export-training",
            "--output=gs://b/t",
            "--dataset_id=502",
            "--partial_background=none",
            "--air_below_hu=-600",
            "--gpu=",
            "--fresh=true",
        ]
    )
    assert command == "export-training"
    args, beam_args = make_parser().parse_known_args(translate(rest, command))
    assert (args.dataset_id, args.partial_background, args.air_below_hu, args.fresh) == (
        502,
        "none",
        -600,
        True,
    )
    assert beam_args == ["--runner=DataflowRunner"]  # the DAG's empty gpu= is not passed on
    assert split_command(["--output=gs://b/r", "--command="]) == ("run", ["--output=gs://b/r"])
    assert translate(["--output=gs://b/t", "--report=false", "--model="], "export-training") == [
        "--output=gs://b/t",
        "--runner=DataflowRunner",
    ]
    with pytest.raises(ParameterError, match="parameter model is not an option of lnq export-training"):
        translate(["--output=gs://b/t", "--model=nnunet:gs://b/m"], "export-training")
    with pytest.raises(ParameterError, match="parameter dataset_id is not an option of lnq run"):
        translate(["--output=gs://b/r", "--dataset_id=502"], "run")
    with pytest.raises(ParameterError, match="command=train: expected one of run, export-training"):
        split_command(["--command=train"])


def test_a_refused_parameter_is_one_line_and_exit_2(capsys) -> None:  # type: ignore[no-untyped-def]
    from beam_jobs.flex_main import main

    assert main(["--command=export-training", "--output=gs://b/t", "--tta=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "lnq flex template: error: parameter tta is not an option of lnq export-training "
        "(command=export-training); leave it out or empty"
    ]


def test_an_empty_switch_is_off_and_a_bare_one_on() -> None:
    """Empty means "not given" for every parameter: an empty ``fresh=`` must not redo a month's work."""
    assert translate(["--output=gs://b/r", "--fresh=", "--report=", "--tta="]) == [
        "--output=gs://b/r",
        "--runner=DataflowRunner",
    ]
    assert translate(["--output=gs://b/r", "--fresh"]) == [
        "--output=gs://b/r",
        "--fresh",
        "--runner=DataflowRunner",
    ]


def test_switch_parameters_become_flags() -> None:
    argv = translate(["--output=gs://b/r", "--fresh=true", "--report=false", "--series_timeout=600"])
    assert argv == ["--output=gs://b/r", "--fresh", "--series-timeout=600", "--runner=DataflowRunner"]
    assert translate(["--output=gs://b/r", "--gpu=", "--runner=FnApiRunner"]) == [
        "--output=gs://b/r",
        "--runner=FnApiRunner",
    ]


def test_the_gpu_parameter_takes_every_supported_request_and_a_cpu_run() -> None:
    from beam_jobs.dataflow import GPU_MACHINES

    (gpu,) = [p for p in METADATA["parameters"] if p["name"] == "gpu"]
    (regex,) = gpu["regexes"]
    for kind, counts in GPU_MACHINES.items():
        for count in counts:
            assert re.fullmatch(regex, f"{kind}:{count}"), (kind, count)
    assert re.fullmatch(regex, "")  # a CPU run: the DAG renders gpu=""
    (image,) = [p for p in METADATA["parameters"] if p["name"] == "sdk_container_image"]
    assert re.fullmatch(
        image["regexes"][0], "us-central1-docker.pkg.dev/p/lnq/lnq-worker:0.1.0-src.0b65f9c831c3"
    )


def test_the_image_is_built_with_the_launching_beam_and_a_small_context() -> None:
    import subprocess

    dry = subprocess.run(
        ["make", "-n", "image", "PROJECT=p", f"PY={sys.executable}", "STAMP=Makefile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--build-arg BEAM_VERSION=$(" in dry and "apache_beam.__version__" in dry
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".venv/", ".venv-airflow/", ".tools/", ".git/"} <= set(ignored)
    for copied in re.findall(r"^COPY (?!--)(\S+)", DOCKERFILE, re.M):
        assert f"{copied}/" not in ignored and copied not in ignored, copied


def test_a_command_given_twice_differently_is_refused() -> None:
    """Two different commands: neither is silently the one that runs."""
    with pytest.raises(ParameterError, match="command given 2 times"):
        split_command(["--command=export-training", "--output=gs://b/t", "--command=run"])
    assert split_command(["--command=run", "--command=run"]) == ("run", [])

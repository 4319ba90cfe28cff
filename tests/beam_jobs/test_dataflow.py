"""Dataflow options: GPU workers, bounded model copies, code shipped, IDC's Google Cloud copy."""

from __future__ import annotations

import pytest

from beam_jobs.dataflow import GpuRequest, dataflow_args
from beam_jobs.launch import pipeline_options

DATAFLOW = ["--runner=DataflowRunner", "--project=p", "--region=us-central1", "--temp_location=gs://b/tmp"]


def test_gpu_workers_one_sdk_process_and_bounded_threads() -> None:
    options = pipeline_options(DATAFLOW, workers=1, gpu="nvidia-l4:1", series_per_worker=3).get_all_options()
    assert options["dataflow_service_options"] == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
    ]
    assert "no_use_multiple_sdk_containers" in options["experiments"]
    assert options["number_of_worker_harness_threads"] == 3
    assert options["machine_type"] == "g2-standard-8"
    assert options["setup_file"].endswith("setup.py")


def test_user_choices_are_kept() -> None:
    args = dataflow_args(
        DATAFLOW
        + [
            "--machine_type=g2-standard-16",
            "--sdk_container_image=img",
            "--number_of_worker_harness_threads=1",
        ],
        gpu=GpuRequest.parse("nvidia-tesla-t4"),
        harness_threads=4,
        setup_file="/x/setup.py",
    )
    assert "--machine_type=g2-standard-16" in args and not any(
        a.startswith("--machine_type=n1") for a in args
    )
    assert not any(a.startswith("--setup_file") for a in args)  # the container already has the package
    assert (
        args.count("--number_of_worker_harness_threads=1") == 1
        and "--number_of_worker_harness_threads=4" not in args
    )


def test_cpu_only_dataflow_and_bad_requests() -> None:
    options = pipeline_options(DATAFLOW, workers=1).get_all_options()
    assert not options["dataflow_service_options"]
    with pytest.raises(ValueError, match="TYPE\\[:COUNT\\]"):
        GpuRequest.parse("l4")
    with pytest.raises(ValueError, match="locally use --device cuda"):
        pipeline_options([], workers=1, gpu="nvidia-l4:1")

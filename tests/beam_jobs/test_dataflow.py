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


@pytest.mark.parametrize(
    ("gpu", "machine"),
    [
        ("nvidia-l4", "g2-standard-8"),
        ("nvidia-l4:2", "g2-standard-24"),
        ("nvidia-l4:8", "g2-standard-96"),
        ("nvidia-tesla-a100:1", "a2-highgpu-1g"),
        ("nvidia-tesla-a100:4", "a2-highgpu-4g"),
        ("nvidia-a100-80gb:2", "a2-ultragpu-2g"),
        ("nvidia-h100-80gb:1", "a3-highgpu-1g"),
        ("nvidia-h100-80gb:8", "a3-highgpu-8g"),
        ("nvidia-tesla-t4:4", "n1-standard-32"),
        ("nvidia-tesla-v100:1", "n1-standard-8"),
    ],
)
def test_each_gpu_request_gets_a_machine_that_holds_it(gpu: str, machine: str) -> None:
    options = pipeline_options(DATAFLOW, workers=1, gpu=gpu).get_all_options()
    assert options["machine_type"] == machine
    kind, _, count = gpu.partition(":")
    assert options["dataflow_service_options"] == [
        f"worker_accelerator=type:{kind};count:{count or 1};install-nvidia-driver"
    ]


@pytest.mark.parametrize(
    "gpu", ["nvidia-l4:3", "nvidia-tesla-t4:8", "nvidia-rtx-4090", "nvidia-l4:0", "l4:1"]
)
def test_a_gpu_no_machine_holds_is_refused_naming_the_supported_ones(gpu: str) -> None:
    with pytest.raises(ValueError, match=r"one of nvidia-l4:1\|2\|4\|8, .*nvidia-h100-80gb:1\|2\|4\|8"):
        GpuRequest.parse(gpu)


def test_with_a_gpu_a_worker_where_torch_sees_no_cuda_fails_its_series_at_inference(
    tmp_path, phantom
) -> None:  # type: ignore[no-untyped-def]
    """--gpu makes --device auto strict: a worker whose torch sees no CUDA (this machine) fails every
    series loudly, naming torch and the driver, instead of running on the CPU."""
    import torch

    from beam_jobs.launch import make_plan
    from beam_jobs.store import ResultStore
    from beam_jobs.transforms import ProcessSeriesFn
    from pipeline.process import ProcessConfig
    from tests.support.cohort import cohort_row, write_cohort
    from tests.support.models import HuWindow, save_torchscript

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    model = save_torchscript(HuWindow(40.0, 70.0), tmp_path / "m.pt")
    cohort = tmp_path / "cohort.parquet"

    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    write_cohort(cohort, [row])
    plan = make_plan(
        ["--output", str(tmp_path / "out"), "--cohort", str(cohort), "--model", f"torchscript:{model}"]
    )
    assert plan.spec is not None and plan.spec.device == "auto"  # no GPU asked: auto may use the CPU
    spec = plan.spec.__class__(**{**plan.spec.__dict__, "device": "cuda"})  # what --gpu makes of auto
    store = ResultStore(str(tmp_path / "out"), "k")
    fn = ProcessSeriesFn(ProcessConfig(model=spec), total=1, store=store)
    fn.setup()
    (done,) = list(fn.process(row))
    assert done.status == "error" and done.errors == (("inference", "ModelError"),)
    (error,) = store.read([phantom.series_uid])[phantom.series_uid].rows.errors
    assert error["message"].startswith(f"series {phantom.series_uid}: a GPU was asked for, but torch ")
    assert "sees no CUDA device" in error["message"] and "refusing to run on the CPU" in error["message"]


def test_the_gpu_flag_makes_auto_strict() -> None:
    from beam_jobs.launch import worker_device

    assert worker_device("auto", gpu="nvidia-l4:1") == "cuda"  # never silently on the CPU
    assert worker_device("auto", gpu=None) == "auto"
    assert worker_device("cpu", gpu="nvidia-l4:1") == "cpu"  # said explicitly

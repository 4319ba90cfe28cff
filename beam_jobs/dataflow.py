"""Options that make the job fit Dataflow: GPU machines, bounded model copies, the code shipped.

GPUs come from the ``worker_accelerator`` service option, so every worker VM has them and runs one
SDK process (``no_use_multiple_sdk_containers``): one model copy per VM, on its first GPU, shared by
that process's threads, with ``number_of_worker_harness_threads`` series in flight per VM (each
series holds its CT in memory; the model serves them one at a time). The machine type comes from
one table (:data:`GPU_MACHINES`): each accelerator attaches only to some machine families, and a
G2, A2 or A3 machine holds a fixed number of GPUs. Right fitting (a GPU hint on the inference step
alone) would split each series across stages and ship its CT volume through the shuffle between
them; for this job the fused single step is cheaper, so the whole job runs on GPU VMs when a GPU is
asked for.

Workers must run this package: either the worker image (``--sdk_container_image``, built by
``make image``) or, from a checkout, ``setup.py`` (Dataflow installs it on each worker). A launch
that would ship neither is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

GPU_MACHINES: dict[str, dict[int, str]] = {
    # L4 only on G2: -4/8/12/16/32 hold one (8 vCPUs: room for the series' child processes), -24 two
    "nvidia-l4": {1: "g2-standard-8", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"},
    "nvidia-tesla-a100": {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g", 8: "a2-highgpu-8g"},
    "nvidia-a100-80gb": {1: "a2-ultragpu-1g", 2: "a2-ultragpu-2g", 4: "a2-ultragpu-4g", 8: "a2-ultragpu-8g"},
    "nvidia-h100-80gb": {1: "a3-highgpu-1g", 2: "a3-highgpu-2g", 4: "a3-highgpu-4g", 8: "a3-highgpu-8g"},
    # T4 and V100 attach to N1 machines
    "nvidia-tesla-t4": {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32"},
    "nvidia-tesla-v100": {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32", 8: "n1-standard-64"},
}
"""Accelerator type -> GPU count -> the machine type Dataflow runs it on."""


def supported_gpus() -> str:
    return ", ".join(f"{kind}:{'|'.join(map(str, counts))}" for kind, counts in GPU_MACHINES.items())


@dataclass(frozen=True)
class GpuRequest:
    """``--gpu TYPE[:COUNT]``, checked against :data:`GPU_MACHINES`."""

    kind: str
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> GpuRequest:
        kind, _, count = text.strip().partition(":")
        if not count:
            count = "1"
        if kind not in GPU_MACHINES or not count.isdigit() or int(count) not in GPU_MACHINES[kind]:
            raise ValueError(f"--gpu {text!r}: expected TYPE[:COUNT], one of {supported_gpus()}")
        return cls(kind=kind, count=int(count))

    @property
    def machine_type(self) -> str:
        return GPU_MACHINES[self.kind][self.count]

    def service_option(self) -> str:
        return f"worker_accelerator=type:{self.kind};count:{self.count};install-nvidia-driver"


def _given(args: list[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def dataflow_args(
    beam_args: list[str], *, gpu: GpuRequest | None, harness_threads: int, setup_file: str | None
) -> list[str]:
    """Add what a Dataflow run of this job needs, unless the user already said it; a ValueError
    when the workers would get no lnq code."""
    args = list(beam_args)
    if gpu is not None:
        args.append(f"--dataflow_service_options={gpu.service_option()}")
        args.append("--experiments=no_use_multiple_sdk_containers")
        if not _given(args, "machine_type") and not _given(args, "worker_machine_type"):
            args.append(f"--machine_type={gpu.machine_type}")
    if not _given(args, "number_of_worker_harness_threads"):
        args.append(f"--number_of_worker_harness_threads={harness_threads}")
    if not (_given(args, "sdk_container_image") or _given(args, "setup_file")):
        if setup_file is None:
            raise ValueError(
                "Dataflow workers would get no lnq code: pass --sdk_container_image=IMAGE "
                "(the worker image, `make image`) or run from a checkout (its setup.py is shipped)"
            )
        args.append(f"--setup_file={setup_file}")
    return args


def repo_setup_file() -> str | None:
    """The project's setup.py when running from a checkout (Dataflow installs it on workers);
    None for an installed package."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "setup.py")
    if not os.path.isfile(path) or not os.path.isdir(os.path.join(root, "pipeline")):
        return None
    return path


def is_dataflow(options: PipelineOptions) -> bool:
    return (options.view_as(StandardOptions).runner or "").endswith("DataflowRunner")


def job_state(project: str | None, region: str | None, job_id: str) -> str | None:
    """The state of a Dataflow job (``JOB_STATE_RUNNING``, ``JOB_STATE_FAILED``...), from Dataflow's
    API; None when it cannot be asked (no project or region, no credentials, no network)."""
    if not (project and region and job_id):
        return None
    from google.cloud import dataflow_v1beta3

    client = dataflow_v1beta3.JobsV1Beta3Client()
    job = client.get_job(
        request=dataflow_v1beta3.GetJobRequest(project_id=project, location=region, job_id=job_id),
        timeout=30,
    )
    return dataflow_v1beta3.JobState(job.current_state).name

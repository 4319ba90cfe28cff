"""Options that make the job fit Dataflow: GPU workers, bounded model copies, shipping the code.

GPUs come from the ``worker_accelerator`` service option, so every worker VM has one
and runs one SDK process (``no_use_multiple_sdk_containers``): one model copy per GPU,
shared by that process's threads, with ``number_of_worker_harness_threads`` series in
flight per VM (each series holds its CT in memory; the model serves them one at a time).
Right fitting (a GPU hint on the inference step alone) would split each series across
stages and ship its CT volume (tens to hundreds of MB) through the shuffle between
them; for this job the fused single step is cheaper, so the whole job runs on GPU VMs
when a GPU is asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from apache_beam.options.pipeline_options import PipelineOptions

# Machine families that take each accelerator on Dataflow.
DEFAULT_MACHINE = {"nvidia-l4": "g2-standard-8", "nvidia-tesla-t4": "n1-standard-8"}


@dataclass(frozen=True)
class GpuRequest:
    kind: str
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> GpuRequest:
        kind, _, count = text.partition(":")
        if not kind.startswith("nvidia-") or (count and not count.isdigit()) or (count and int(count) < 1):
            raise ValueError(f"--gpu {text!r}: expected TYPE[:COUNT], e.g. nvidia-l4:1 or nvidia-tesla-t4")
        return cls(kind=kind, count=int(count or 1))

    def service_option(self) -> str:
        return f"worker_accelerator=type:{self.kind};count:{self.count};install-nvidia-driver"


def _given(args: list[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def dataflow_args(
    beam_args: list[str], *, gpu: GpuRequest | None, harness_threads: int, setup_file: str | None
) -> list[str]:
    """Add what a Dataflow run of this job needs, unless the user already said it."""
    args = list(beam_args)
    if gpu is not None:
        args.append(f"--dataflow_service_options={gpu.service_option()}")
        args.append("--experiments=no_use_multiple_sdk_containers")
        if not _given(args, "machine_type") and not _given(args, "worker_machine_type"):
            args.append(f"--machine_type={DEFAULT_MACHINE.get(gpu.kind, 'g2-standard-8')}")
    if not _given(args, "number_of_worker_harness_threads"):
        args.append(f"--number_of_worker_harness_threads={harness_threads}")
    if not (_given(args, "sdk_container_image") or _given(args, "setup_file")) and setup_file:
        args.append(f"--setup_file={setup_file}")
    return args


def repo_setup_file() -> str | None:
    """The project's setup.py when running from a checkout (Dataflow installs it on workers)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")
    return path if os.path.isfile(path) else None


def is_dataflow(options: PipelineOptions) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    return (options.view_as(StandardOptions).runner or "").endswith("DataflowRunner")

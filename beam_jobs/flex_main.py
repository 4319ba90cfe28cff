"""Flex-template entry point: Google's Python launcher runs this file with the template's parameters.

Parameters arrive as ``--name=value`` with the names of ``infra/dataflow/metadata.json``
(underscores), plus the launch environment's Beam options (``--sdk_container_image``,
``--template_location``...). They are handed to ``lnq run`` (options with dashes), whose exit codes
and one-line messages the launcher's log shows. The job runs on Dataflow: the runner is Dataflow's
unless the parameters name another (the offline tests run the same file on the local runner).
Empty optional parameters (a CPU run's ``gpu=``) mean "not given".
"""

from __future__ import annotations

import sys

# Template parameters that are lnq run options (the rest are Beam's own and pass through).
OWN_OPTIONS = (
    "cohort",
    "output",
    "annotation",
    "limit",
    "s3_endpoint",
    "model",
    "device",
    "folds",
    "checkpoint",
    "step_size",
    "iou_threshold",
    "tta",
    "gpu",
    "series_per_worker",
    "series_timeout",
    "series_memory_gb",
    "fetch_timeout",
    "allow_bucket",
    "fresh",
    "report",
    "trust_model_code",
)
FLAGS = ("fresh", "report", "trust_model_code")  # true/false parameters that are switches of lnq run
TRUE = ("", "true", "1", "yes")


def translate(argv: list[str]) -> list[str]:
    """``--s3_endpoint=x`` to ``--s3-endpoint=x``; ``--tta=false`` to ``--no-tta``; folds split; the
    Dataflow runner unless one is named."""
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name not in OWN_OPTIONS:
            out.append(arg)
        elif name == "tta":
            out.append("--tta" if value.lower() in TRUE else "--no-tta")
        elif name in FLAGS:
            if value.lower() in TRUE:
                out.append(f"--{name}")
        elif eq and not value.strip():
            continue  # an optional parameter left empty
        elif name == "folds":
            out += ["--folds", *value.replace(",", " ").split()]
        else:
            out.append(f"--{name.replace('_', '-')}{eq}{value}")
    if not any(a == "--runner" or a.startswith("--runner=") for a in out):
        out.append("--runner=DataflowRunner")
    return out


def main(argv: list[str] | None = None) -> int:
    from beam_jobs.cli import main as lnq

    return lnq(["run", *translate(list(sys.argv[1:] if argv is None else argv))])


if __name__ == "__main__":
    sys.exit(main())

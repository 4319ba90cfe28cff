"""Flex-template entry point: the launcher runs this file with the template's parameters.

Parameters arrive as ``--name=value`` with the names of ``infra/dataflow/metadata.json``
(underscores); they are handed to ``lnq run``, whose options use dashes.
"""

from __future__ import annotations

import logging
import sys

from beam_jobs.lnq_run import run

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
)
FLAGS = ("fresh", "report")  # true/false parameters that are switches of lnq run


def translate(argv: list[str]) -> list[str]:
    """``--s3_endpoint=x`` to ``--s3-endpoint=x``; ``--tta=false`` to ``--no-tta``; folds split."""
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name not in OWN_OPTIONS:
            out.append(arg)
        elif name == "tta":
            out.append("--tta" if value.lower() in ("", "true", "1", "yes") else "--no-tta")
        elif name in FLAGS:
            if value.lower() in ("", "true", "1", "yes"):
                out.append(f"--{name}")
        elif name == "folds":
            out += ["--folds", *value.replace(",", " ").split()]
        else:
            out.append(f"--{name.replace('_', '-')}{eq}{value}")
    return out


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    run(translate(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()

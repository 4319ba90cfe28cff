"""Flex-template entry point: Google's Python launcher runs this file with the template's parameters.

Parameters arrive as ``--name=value`` with the names of ``infra/dataflow/metadata.json``
(underscores), plus the launch environment's Beam options (``--sdk_container_image``,
``--template_location``...). The ``command`` parameter picks the job: ``run`` (the default, ``lnq
run``) or ``export-training`` (``lnq export-training``); the other parameters are handed to it as
its options (with dashes), whose exit codes and one-line messages the launcher's log shows. A
parameter that belongs to the other command only is refused in one line (exit 2). The job runs on
Dataflow: the runner is Dataflow's unless the parameters name another (the offline tests run the
same file on the local runner). Empty optional parameters (a CPU run's ``gpu=``) mean "not given".
"""

from __future__ import annotations

import sys

COMMANDS = ("run", "export-training")
# Template parameters that are options of both commands, or of one (the rest are Beam's own and pass through).
SHARED_OPTIONS = (
    "cohort",
    "output",
    "annotation",
    "limit",
    "s3_endpoint",
    "series_per_worker",
    "series_timeout",
    "series_memory_gb",
    "fetch_timeout",
    "allow_bucket",
    "fresh",
)
COMMAND_OPTIONS = {
    "run": (
        "model",
        "device",
        "folds",
        "checkpoint",
        "step_size",
        "iou_threshold",
        "tta",
        "gpu",
        "report",
        "trust_model_code",
    ),
    "export-training": (
        "dataset_id",
        "dataset_name",
        "test_annotation",
        "partial_background",
        "air_below_hu",
        "bone_above_hu",
    ),
}
OWN_OPTIONS = (*SHARED_OPTIONS, *(name for names in COMMAND_OPTIONS.values() for name in names))
FLAGS = ("fresh", "report", "trust_model_code")  # true/false parameters that are switches
TRUE = ("true", "1", "yes")


class ParameterError(ValueError):
    """A template parameter the chosen command does not take; the message is one line."""


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """The ``--command=`` parameter (``run`` when absent or empty) and the other arguments."""
    given: list[str] = []
    rest = []
    for arg in argv:
        if arg.startswith("--command="):
            given.append(arg.split("=", 1)[1].strip() or "run")
        else:
            rest.append(arg)
    if len(set(given)) > 1:
        raise ParameterError(f"command given {len(given)} times ({', '.join(given)}): give it once")
    command = given[0] if given else "run"
    if command not in COMMANDS:
        raise ParameterError(f"command={command}: expected one of {', '.join(COMMANDS)}")
    return command, rest


def translate(argv: list[str], command: str = "run") -> list[str]:
    """``--s3_endpoint=x`` to ``--s3-endpoint=x``; ``--tta=false`` to ``--no-tta``; folds split; the
    Dataflow runner unless one is named. A parameter of the other command is refused unless it asks
    for nothing (empty, or a switch set to false)."""
    others = {name for c, names in COMMAND_OPTIONS.items() if c != command for name in names}
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name in others:
            asks_nothing = not value.strip() or (name in FLAGS and value.strip().lower() not in TRUE)
            if not asks_nothing:
                raise ParameterError(
                    f"parameter {name} is not an option of lnq {command} (command={command}); leave it "
                    "out or empty"
                )
            continue
        if name not in OWN_OPTIONS:
            out.append(arg)
        elif eq and not value.strip():
            continue  # an optional parameter left empty: not given (a switch stays off)
        elif name == "tta":
            out.append("--tta" if value.lower() in TRUE else "--no-tta")
        elif name in FLAGS:
            if not eq or value.lower() in TRUE:
                out.append(f"--{name}")
        elif name == "folds":
            out += ["--folds", *value.replace(",", " ").split()]
        else:
            out.append(f"--{name.replace('_', '-')}{eq}{value}")
    if not any(a == "--runner" or a.startswith("--runner=") for a in out):
        out.append("--runner=DataflowRunner")
    return out


def main(argv: list[str] | None = None) -> int:
    from beam_jobs.cli import EXIT_USAGE
    from beam_jobs.cli import main as lnq

    try:
        command, rest = split_command(list(sys.argv[1:] if argv is None else argv))
        options = translate(rest, command)
    except ParameterError as exc:
        print(f"lnq flex template: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return lnq([command, *options])


if __name__ == "__main__":
    sys.exit(main())

"""Seconds for ``lnq demo`` from the command line to the report, against its goal of one minute.

The whole first run a newcomer makes: the demo writes its phantoms, cohort and model, runs the
job (5 series, 2 workers, the HU-window TorchScript model) and writes the report. Timed as a
user sees it: one ``lnq demo`` process each time (interpreter start, imports, fork server,
Beam), ``--repeat`` times, each into a fresh folder. CPU is the process and its children.

    .venv/bin/python -m bench.demo_speed [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import lnq_command, machine

GOAL_S = 60.0
REPO = Path(__file__).resolve().parents[1]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    seconds, cpu_seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"demo-{i}"
            start, cpu_start = time.perf_counter(), _children_cpu_s()
            done = subprocess.run(
                lnq_command("demo", "--output", str(out)),
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(_children_cpu_s() - cpu_start)
            if done.returncode != 0:
                raise SystemExit(f"lnq demo failed ({done.returncode}): {done.stderr[-2000:]}")
    print(
        json.dumps(
            {
                "machine": machine(),
                "demo_seconds": [round(s, 1) for s in seconds],
                "demo_cpu_seconds": [round(s, 1) for s in cpu_seconds],
                "goal_s": GOAL_S,
                "within_goal": max(seconds) <= GOAL_S,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""What every benchmark needs: the machine it ran on, and how to start a child process of its own."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    """The machine a benchmark ran on, as every benchmark reports it."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": load,
    }


def describe_machine() -> str:
    """One line: ``x86_64 (Linux-...), 2 CPUs, Python 3.11.7, load average 0.5 0.4 0.3``."""
    m = machine()
    load = " ".join(map(str, m["load_average"])) if m["load_average"] else "unknown"
    return f"{m['processor']} ({m['platform']}), {m['cpus']} CPUs, Python {m['python']}, load average {load}"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a benchmark's child process: the repository importable wherever it runs."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs ``module`` (``bench.pipeline_stages``, ``beam_jobs.cli``...) in a child."""
    return [sys.executable, "-m", module, *args]


def lnq_command(*args: str) -> list[str]:
    """``lnq`` as a child process (with :func:`child_env`): the one way a benchmark runs the job."""
    return module_command("beam_jobs.cli", *args)

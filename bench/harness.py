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


NODES_PER_SERIES = 9
"""Fully annotated LNQ cases average about 9 nodes."""


def lnq_sized_phantom(folder: Path, n_slices: int, **options: Any) -> Any:
    """A phantom of LNQ's size, as every benchmark makes it: 512 x 512 slices of 0.78 mm,
    ``n_slices`` of 2.5 mm (1.25 mm above 300 slices), with :data:`NODES_PER_SERIES` nodes of 8 to 23 mm
    around the middle slice; ``options`` go to :func:`pipeline.demo.phantoms.make_phantom` (``seed``
    defaults to ``n_slices``)."""
    from pipeline.demo.phantoms import Ellipsoid, make_phantom

    spacing = 1.25 if n_slices > 300 else 2.5
    z_center = -300.0 + (n_slices - 1) * spacing / 2.0
    nodes = []
    for i in range(NODES_PER_SERIES):
        semi = 4.0 + (i % 4) * 2.5
        centre = (-8.0 + (i % 3) * 8.0, -30.0 + (i % 5) * 15.0, z_center + (i - NODES_PER_SERIES // 2) * 22.0)
        nodes.append(Ellipsoid(centre, (semi, semi * 0.8, semi)))
    options.setdefault("seed", n_slices)
    return make_phantom(
        folder,
        shape_zyx=(n_slices, 512, 512),
        pixel_spacing_mm=(0.78, 0.78),
        slice_spacing_mm=spacing,
        nodes=nodes,
        **options,
    )

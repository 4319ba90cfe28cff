"""``lnq demo``: the whole job on phantoms, offline, in under a minute.

Writes LNQ-like phantom series, their cohort and a HU-window TorchScript model into
``OUTPUT/demo-input/`` (``pipeline.demo``), then runs ``lnq run`` on them with the report, so that a
newcomer without IDC's bucket sees every stage, every table, the DICOM it writes and the report.
The series are read as local folders (a cohort's ``ct_series_url`` may be a folder).
"""

from __future__ import annotations

import os

INPUT_FOLDER = "demo-input"


def demo_run_args(output: str, *, workers: int) -> tuple[list[str], int]:
    """Write the demo's inputs under ``output`` and return the ``lnq run`` arguments that process
    them, with the number of series the demo breaks on purpose."""
    from pipeline.demo.inputs import write_demo_inputs

    inputs = write_demo_inputs(os.path.join(output, INPUT_FOLDER))
    argv = [
        "--cohort",
        str(inputs.cohort),
        "--output",
        output,
        "--model",
        f"torchscript:{inputs.model}",
        "--device",
        "cpu",
        "--workers",
        str(workers),
        "--fresh",
        "--report",
    ]
    return argv, inputs.n_bad

"""A first run without internet: LNQ-like phantom series, their cohort and a toy model.

``lnq demo`` (``beam_jobs/demo.py``) writes them with :func:`write_demo_inputs` and runs the whole
job on them; the tests build their inputs from the same generator. Loaded on first use: torch
(the model) and highdicom (the SEGs) only when asked for.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "DemoInputs": "pipeline.demo.inputs",
    "Ellipsoid": "pipeline.demo.phantoms",
    "HuWindow": "pipeline.demo.model",
    "Phantom": "pipeline.demo.phantoms",
    "cohort_row": "pipeline.demo.cohort",
    "make_phantom": "pipeline.demo.phantoms",
    "save_torchscript": "pipeline.demo.model",
    "write_demo_inputs": "pipeline.demo.inputs",
    "write_seg": "pipeline.demo.phantoms",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

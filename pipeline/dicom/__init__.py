"""DICOM decoding: CT series to HU volumes, reference SEG to masks on the CT grid.

The names below are loaded on first use: the job's launcher imports :mod:`pipeline.dicom.volume`
for its geometry and should not pay for pydicom and highdicom (0.5 s) to do so.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CtVolume": "pipeline.dicom.volume",
    "Geometry": "pipeline.dicom.volume",
    "mask_to_sitk": "pipeline.dicom.volume",
    "decode_ct_series": "pipeline.dicom.ct",
    "read_reference_seg": "pipeline.dicom.reference_seg",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

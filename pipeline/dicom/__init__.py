"""DICOM decoding: CT series to HU volumes, reference SEG to masks on the CT grid.

The names below are loaded on first use: the job's launcher imports :mod:`pipeline.dicom.volume`
for its geometry and should not pay for pydicom and highdicom (0.5 s) to do so.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "CtVolume": "pipeline.dicom.volume",
    "Geometry": "pipeline.dicom.volume",
    "mask_to_sitk": "pipeline.dicom.volume",
    "decode_ct_series": "pipeline.dicom.ct",
    "read_reference_seg": "pipeline.dicom.reference_seg",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

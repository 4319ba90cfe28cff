"""DICOM decoding: CT series to HU volumes, reference SEG to masks on the CT grid."""

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.reference_seg import read_reference_seg
from pipeline.dicom.volume import CtVolume, Geometry, mask_to_sitk

__all__ = ["CtVolume", "Geometry", "decode_ct_series", "mask_to_sitk", "read_reference_seg"]

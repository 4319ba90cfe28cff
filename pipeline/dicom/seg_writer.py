"""Write a predicted node mask as a DICOM SEG that Slicer, OHIF and dcmqi open.

BINARY, one segment 'Mediastinal lymph node' coded like the LNQ reference
(property type SCT 59441001 Lymph node, category SCT 91723000 Anatomical
Structure), algorithm AUTOMATIC with the model's name and version, referencing
the source CT series and instances; empty frames are omitted. A mask with no
node still gives a valid SEG: highdicom keeps a single empty frame then, so the
file records that the model was run and found nothing.

UIDs are derived from the CT series and the model, so a rerun writes the same
SEG identity and overwrites, never adds, a second object.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import uuid

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

import pipeline
from pipeline.dicom.volume import CtVolume
from pipeline.errors import SegWriteError

logger = logging.getLogger(__name__)

LYMPH_NODE = hd.sr.CodedConcept("59441001", "SCT", "Lymph node")
ANATOMICAL_STRUCTURE = hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")
SEGMENT_LABEL = "Mediastinal lymph node"
_UID_NAMESPACE = uuid.UUID("5b0f7a8e-3c4d-4f0e-9d21-6a1c2b3e4f50")


def derived_uid(*parts: str) -> str:
    """A DICOM UID (2.25 form) that is the same for the same parts."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(parts)).int}"


def prediction_seg(
    mask: np.ndarray, ct: CtVolume, *, model_name: str, model_version: str
) -> hd.seg.Segmentation:
    """A SEG of ``mask`` (``[z, y, x]`` on ``ct``'s grid) referencing the CT's instances."""
    if mask.shape != ct.geometry.size_zyx:
        raise SegWriteError(
            f"mask shape {mask.shape} differs from CT {ct.hu.shape}", series_uid=ct.series_uid
        )
    if not ct.source_files:
        raise SegWriteError("the CT's source files are needed to reference them", series_uid=ct.series_uid)
    files = list(ct.source_files)
    if not mask.any():
        logger.info("series %s: no node predicted; writing a SEG of one empty frame", ct.series_uid)
        files, mask = files[:1], mask[:1]
    sources = _source_headers(files, ct)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=LYMPH_NODE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=model_name[:64], version=model_version[:64], family=codes.cid7162.ArtificialIntelligence
        ),
    )
    key = (ct.series_uid, model_name, model_version)
    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=np.ascontiguousarray(mask, dtype=np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=derived_uid("series", *key),
            series_number=3000,
            sop_instance_uid=derived_uid("instance", *key),
            instance_number=1,
            manufacturer="LNQ pipeline",
            manufacturer_model_name=model_name[:64],
            software_versions=f"lnq-pipeline {pipeline.__version__}",
            device_serial_number="0",
            series_description=f"{model_name} lymph nodes"[:64],
            content_label="LYMPHNODES",
            content_description=f"{model_name} {model_version}"[:64],
            content_creator_name="LNQ^Pipeline",
            content_date=dt.date.today(),
            content_time=dt.datetime.now().time().replace(microsecond=0),
            omit_empty_frames=True,
        )
    except Exception as exc:
        raise SegWriteError(
            f"the SEG cannot be built: {type(exc).__name__}: {exc}", series_uid=ct.series_uid
        ) from exc


def _source_headers(files: list[str], ct: CtVolume) -> list[pydicom.Dataset]:
    """CT headers to reference; anonymised files with empty UIDs get stand-ins (logged)."""
    headers: list[pydicom.Dataset] = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    first_sop = str(
        headers[0].get("SOPInstanceUID") or headers[0].file_meta.get("MediaStorageSOPInstanceUID", "")
    )
    stand_ins = {
        "StudyInstanceUID": ct.study_uid or derived_uid("study-of", first_sop),
        "SeriesInstanceUID": ct.series_uid or derived_uid("series-of", first_sop),
    }
    for ds in headers:
        for keyword in ("ReferencedStudySequence", "ReferencedPatientSequence"):
            if keyword in ds:  # copied into the SEG: keep only complete references (both UIDs)
                items = [
                    i
                    for i in ds[keyword].value
                    if i.get("ReferencedSOPClassUID") and i.get("ReferencedSOPInstanceUID")
                ]
                if items:
                    ds[keyword].value = items
                else:
                    del ds[keyword]
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty means the default repertoire; highdicom wants it absent
        if not ds.get("SOPClassUID"):
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        if not ds.get("SOPInstanceUID"):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        for keyword, value in stand_ins.items():
            if not ds.get(keyword):
                setattr(ds, keyword, value)
    missing = [
        k for k, v in (("StudyInstanceUID", ct.study_uid), ("SeriesInstanceUID", ct.series_uid)) if not v
    ]
    if missing:
        logger.warning(
            "CT from %s has empty %s; the SEG references derived stand-in UIDs",
            os.path.dirname(files[0]),
            missing,
        )
    return headers


def seg_bytes(seg: hd.seg.Segmentation) -> bytes:
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()

"""Coded concepts of the node SEG and the TID 1500 report, declared once.

Standard codes (DCM, SCT, UCUM), spelled as highdicom and dcmqi spell them:

- Lymph node SCT 59441001 (segmented property type and finding type), Anatomical
  Structure SCT 91723000 (category), Mediastinum SCT 72410000 (anatomic region and
  finding site); long axis SCT 103339001, short axis SCT 103340004, volume SCT 118565006.
- Mean HU: Attenuation Coefficient DCM 112031 with derivation Mean SCT 373098007 and unit
  UCUM ``[hnsf'U]``, as dcmqi's CT TID 1500 examples and IDC's tables write it.
- Volume method: Sum of segmented voxel volumes DCM 126030 (volume = voxel count x voxel
  volume); axes method: RECIST 1.1 DCM 126081 (CID 6147 Response Criteria).

Where no single code exists:

- Maximum 3D diameter: Diameter SCT 81827009 with derivation Maximum SCT 56851009 (CID 7464).
  Both are standard; the pair reads as "maximum diameter" in IDC's flattened view (Quantity
  Diameter, derivationModifier Maximum) and cannot be confused with the in-plane long axis,
  which has its own concept. IBSI's "Maximum 3D diameter" (L0JK) is not a DICOM coding scheme.
- RECIST category: the question is Baseline Category DCM 112016 and the answers Target Lesion
  at Baseline DCM 112074, Non-Target Lesion at Baseline DCM 112075 and Non-Lesion at Baseline
  DCM 112076 (CID 6145, from the Chest CAD SR): RECIST 1.1 calls a node < 10 mm short axis
  normal, not a lesion, which is exactly "non-lesion". Our one time point is read as baseline.
"""

from __future__ import annotations

import highdicom as hd

from pipeline.measure.categories import RecistCategory
from pipeline.measure.quality import NodeQuality

LYMPH_NODE = hd.sr.CodedConcept("59441001", "SCT", "Lymph node")
ANATOMICAL_STRUCTURE = hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")
MEDIASTINUM = hd.sr.CodedConcept("72410000", "SCT", "Mediastinum")

LONG_AXIS = hd.sr.CodedConcept("103339001", "SCT", "Long Axis")
SHORT_AXIS = hd.sr.CodedConcept("103340004", "SCT", "Short Axis")
VOLUME = hd.sr.CodedConcept("118565006", "SCT", "Volume")
DIAMETER = hd.sr.CodedConcept("81827009", "SCT", "Diameter")
ATTENUATION_COEFFICIENT = hd.sr.CodedConcept("112031", "DCM", "Attenuation Coefficient")
MAXIMUM = hd.sr.CodedConcept("56851009", "SCT", "Maximum")
MEAN = hd.sr.CodedConcept("373098007", "SCT", "Mean")
SUM_OF_VOXEL_VOLUMES = hd.sr.CodedConcept("126030", "DCM", "Sum of segmented voxel volumes")
RECIST_1_1 = hd.sr.CodedConcept("126081", "DCM", "RECIST 1.1")

MILLIMETRE = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
MILLILITRE = hd.sr.CodedConcept("mL", "UCUM", "milliliter")
HOUNSFIELD_UNIT = hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")

BASELINE_CATEGORY = hd.sr.CodedConcept("112016", "DCM", "Baseline Category")
RECIST_CATEGORY_CODES: dict[RecistCategory, hd.sr.CodedConcept] = {
    RecistCategory.TARGET: hd.sr.CodedConcept("112074", "DCM", "Target Lesion at Baseline"),
    RecistCategory.NON_TARGET: hd.sr.CodedConcept("112075", "DCM", "Non-Target Lesion at Baseline"),
    RecistCategory.NORMAL: hd.sr.CodedConcept("112076", "DCM", "Non-Lesion at Baseline"),
}
"""RECIST 1.1 node category -> coded answer to Baseline Category."""

IMAGING_MEASUREMENT_REPORT = hd.sr.CodedConcept("126000", "DCM", "Imaging Measurement Report")
CT_PROCEDURE = hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region")

LNQ_SCHEME = "99LNQ"
"""A local coding scheme (designators starting ``99`` are for local use, PS3.16 8.2): no standard
code says "this segment is too small, or too large, to be read as a lymph node measurement"."""
MEASUREMENT_QUALITY = hd.sr.CodedConcept("QF", LNQ_SCHEME, "LNQ measurement quality")
QUALITY_CODES: dict[NodeQuality, hd.sr.CodedConcept] = {
    NodeQuality.SPECK: hd.sr.CodedConcept("SPECK", LNQ_SCHEME, "Speck: below the node size measurable here"),
    NodeQuality.IMPLAUSIBLE: hd.sr.CodedConcept(
        "IMPLAUSIBLE", LNQ_SCHEME, "Implausible size for a lymph node"
    ),
}
"""Answers of :data:`MEASUREMENT_QUALITY` for flagged nodes (``nodes.quality_flag``); an ``ok`` node
carries no such evaluation."""

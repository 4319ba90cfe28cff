"""DICOM in and out: the CT decoder (``ct``) and its header checks (``header_checks``), the reference
SEG placed on the CT grid (``reference_seg``, its plane checks in ``seg_planes``), the per-node SEG
(``seg_writer``) and TID 1500 SR (``sr``, its image lines in ``sr_lines``) we write, the SR flattened
as IDC's quantitative measurements (``sr_rows``), their codes (``codes``) and tracking (``tracking``).

Modules are imported by name: pydicom and highdicom load only where DICOM is read or written.
"""

"""DICOM in and out: untrusted headers read safely (``safe_read``), the CT decoder (``ct``) and its
checks (``ct_checks``, compressed frames' in ``codestreams``), the reference SEG placed on the CT grid
(``reference_seg``, its header and plane checks in ``seg_checks``), the per-node SEG
(``seg_writer``) and TID 1500 SR (``sr``, its image lines in ``sr_lines``) we write, the SR flattened
as IDC's quantitative measurements (``sr_rows``), their codes (``codes``) and tracking (``tracking``).

Modules are imported by name: pydicom and highdicom load only where DICOM is read or written.
"""

"""The training export (``lnq export-training``): an nnU-Net v2 raw dataset from a cohort.

Labels and the known-background rule (``labels``, ``settings``), NIfTI on the CT's grid (``nifti``),
the dataset layout and ``dataset.json`` (``dataset``), case names, splits and the case table
(``cases``, ``splits``), provenance from idc-index (``provenance``), and one case's isolated work
(``export_case``). Modules are imported by name.
"""

"""What a run writes for each series besides its table rows, declared once.

Each artifact kind has its folder under the output, its file extension and the ``series`` column
that points to it; a series' file is ``<folder>/<ct_series_instance_uid><extension>``.
"""

from __future__ import annotations

import enum


class Artifact(str, enum.Enum):
    """A per-series file: the per-node DICOM SEG, the TID 1500 SR, the QC picture."""

    SEG = "seg"
    SR = "sr"
    QC = "qc"

    @property
    def folder(self) -> str:
        return self.value

    @property
    def extension(self) -> str:
        return ".png" if self is Artifact.QC else ".dcm"

    @property
    def column(self) -> str:
        """The ``series`` column holding the file's URI."""
        return f"{self.value}_uri"

    def relative_path(self, series_uid: str) -> str:
        return f"{self.folder}/{series_uid}{self.extension}"

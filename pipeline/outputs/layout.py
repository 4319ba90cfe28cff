"""Where a run's outputs live under its output folder, declared once.

An output folder (a local path or ``gs://...``) holds the published tables (``<table>/`` with one
Parquet file each; ``pipeline/outputs/schemas.py`` declares them), each series' files (the
:class:`Artifact` kinds: ``seg/``, ``sr/``, ``qc/``), the run report (``report/``) and the project's
bookkeeping under ``_lnq/``: kept results, the manifest of the files it wrote, the journal of a
publish in progress, the facts of the last run and the lock. Every module that reads or writes an
output asks an :class:`OutputLayout` for its paths.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

WORK_AREA = "_lnq"
"""The project's bookkeeping folder inside an output (readers of the tables never look there)."""
TABLE_FILE = "part-00000-of-00001.parquet"
"""The one Parquet file of each published table."""
REPORT_FOLDER = "report"
REPORT_INDEX = "index.html"
MANIFEST = f"{WORK_AREA}/manifest.json"
"""Every file outside ``_lnq/`` that the project wrote (and may therefore delete)."""
JOURNAL = f"{WORK_AREA}/publish.json"
"""The renames of a publish in progress (rolled forward by the next run)."""
RUN_FACTS = f"{WORK_AREA}/run.json"
"""The facts of the last published run."""
LOCK = f"{WORK_AREA}/lock.json"
"""The run (or job) writing this output now."""


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


@dataclass(frozen=True)
class OutputLayout:
    """The paths of one output folder (``root``: a local path or ``gs://bucket/folder``)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", self.root.rstrip("/") or self.root)

    def join(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    @staticmethod
    def table_file(table: str) -> str:
        """A published table's file, relative to the output."""
        return f"{table}/{TABLE_FILE}"

    def table(self, table: str) -> str:
        return self.join(self.table_file(table))

    def table_files(self, table: str) -> str:
        """The pattern of a table's Parquet files (what loaders and readers match)."""
        return self.join(f"{table}/*.parquet")

    def artifact(self, kind: Artifact, series_uid: str) -> str:
        return self.join(kind.relative_path(series_uid))

    def artifacts(self, kind: Artifact) -> str:
        """The pattern of every file of one kind."""
        return self.join(f"{kind.folder}/*{kind.extension}")

    def work(self, name: str) -> str:
        """A file or folder of the project's bookkeeping, ``_lnq/<name>``."""
        return self.join(f"{WORK_AREA}/{name}")

    def results(self, settings_key: str) -> str:
        return self.work(f"results/{settings_key}")

    @property
    def manifest(self) -> str:
        return self.join(MANIFEST)

    @property
    def journal(self) -> str:
        return self.join(JOURNAL)

    @property
    def run_facts(self) -> str:
        return self.join(RUN_FACTS)

    @property
    def lock(self) -> str:
        return self.join(LOCK)

    @property
    def report_folder(self) -> str:
        return self.join(REPORT_FOLDER)

    @property
    def report_index(self) -> str:
        return self.join(f"{REPORT_FOLDER}/{REPORT_INDEX}")

    @staticmethod
    def own_folders(tables: tuple[str, ...]) -> tuple[str, ...]:
        """The output's own folders, relative (none may be a link leading out of it)."""
        return (WORK_AREA, *tables, *(a.folder for a in Artifact), REPORT_FOLDER)

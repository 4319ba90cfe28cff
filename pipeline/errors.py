"""One exception family for everything that can go wrong with one series.

Every error carries the series it concerns and the stage it happened in, so
that the Beam job can turn it into an ``errors`` row without guessing.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a problem with one series' input, never a bug in our code."""

    stage = "pipeline"

    def __init__(self, message: str, *, series_uid: str | None = None) -> None:
        self.series_uid = series_uid
        self.detail = message
        prefix = f"series {series_uid}: " if series_uid else ""
        super().__init__(prefix + message)


class CohortError(PipelineError):
    """A cohort row that cannot be processed (bad UID, bad URL, missing field)."""

    stage = "cohort"


class FetchError(PipelineError):
    """Copying a series from object storage failed or returned too few files."""

    stage = "fetch"


class DecodeError(PipelineError):
    """The CT files do not form one consistent, complete volume."""

    stage = "decode"


class ReferenceSegError(PipelineError):
    """The expert SEG is unreadable or does not belong to the CT series."""

    stage = "reference"


class MeasurementError(PipelineError):
    """A mask could not be measured."""

    stage = "measure"

"""One exception family for everything that can go wrong with one series.

Every error carries the series it concerns and the stage it happened in, so
that the job can turn it into an ``errors`` row without guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.enums import Stage


class PipelineError(Exception):
    """Base class: a problem with one series' input, never a bug in our code.

    ``stage`` is None for errors that belong to no particular stage; the stage
    running when they were raised is reported then.
    """

    stage: Stage | None = None

    def __init__(self, message: str, *, series_uid: str | None = None) -> None:
        self.series_uid = series_uid
        self.detail = message
        prefix = f"series {series_uid}: " if series_uid else ""
        super().__init__(prefix + message)


class CohortError(PipelineError):
    """A cohort row that cannot be processed (bad UID, bad URL, missing field)."""

    stage = Stage.COHORT


class FetchError(PipelineError):
    """Copying a series from object storage failed or returned too few files."""

    stage = Stage.FETCH


class DecodeError(PipelineError):
    """The CT files do not form one consistent, complete volume."""

    stage = Stage.DECODE


class ReferenceSegError(PipelineError):
    """The expert SEG is unreadable or does not belong to the CT series."""

    stage = Stage.REFERENCE


class ModelError(PipelineError):
    """A model that cannot be loaded or run on a series."""

    stage = Stage.INFERENCE


class MeasurementError(PipelineError):
    """A mask could not be measured."""

    stage = Stage.MEASURE


class SegWriteError(PipelineError):
    """A DICOM object (SEG) could not be built from the results."""

    stage = Stage.SEG_WRITE


class ScoreError(PipelineError):
    """A prediction could not be scored against its reference (for example, not one grid)."""

    stage = Stage.SCORE


@dataclass(frozen=True)
class SeriesError:
    """One ``errors`` row: where it happened, what kind of error, and a message naming the series."""

    stage: Stage
    error_type: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException, *, stage: Stage, series_uid: str) -> SeriesError:
        """The error of ``exc``; its own stage wins for pipeline errors that carry one."""
        if isinstance(exc, PipelineError) and exc.stage is not None:
            stage = exc.stage
        message = str(exc) or repr(exc)
        if series_uid and series_uid not in message:
            message = f"series {series_uid}: {message}"
        return cls(stage=stage, error_type=type(exc).__name__, message=message)


class IsolatedFailure(PipelineError):
    """The isolated stages of a series failed (raised there, crashed, or hit a limit);
    ``error`` is the series' error row, ready to store (see ``pipeline.isolation``)."""

    def __init__(self, error: SeriesError, *, series_uid: str) -> None:
        super().__init__(error.message)  # the message names the series already
        self.series_uid = series_uid
        self.error = error
        self.stage = error.stage

"""The outcome of one series: one frozen, typed record, whatever happened.

:func:`pipeline.process.process_series` returns a :class:`SeriesOutcome`; the
table rows are derived from it in one place (:mod:`pipeline.outputs.rows`), so
no stage writes output columns itself.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.enums import NodeSource, SeriesStatus, Stage
from pipeline.errors import SeriesError

if TYPE_CHECKING:  # the record is light to import: the CLI and the isolation layer use it
    from pipeline.evaluate.detection import Detection
    from pipeline.evaluate.lnq2023 import CaseScore
    from pipeline.measure.burden import Burden
    from pipeline.measure.nodes import NodeMeasurement


def _text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return None if value is None or value != value else str(value)  # NaN is not a value


@dataclass(frozen=True)
class SeriesIdentity:
    """Who the series is, as the cohort row says (before or after validation)."""

    ct_series_instance_uid: str
    patient_id: str | None = None
    study_instance_uid: str | None = None
    annotation: str | None = None

    @classmethod
    def from_cohort(cls, raw: Mapping[str, Any]) -> SeriesIdentity:
        """Identity of a raw cohort mapping; missing or NaN values become None (or '' for the UID)."""
        return cls(
            ct_series_instance_uid=_text(raw, "ct_series_instance_uid") or "",
            patient_id=_text(raw, "patient_id"),
            study_instance_uid=_text(raw, "study_instance_uid"),
            annotation=_text(raw, "annotation"),
        )


@dataclass(frozen=True)
class GridSummary:
    """What the decoded CT grid was."""

    n_slices: int
    slice_spacing_mm: float

    @classmethod
    def of(cls, grid: _Grid) -> GridSummary:
        """Of a grid's size (z, y, x) and spacing (x, y, z), as :class:`~pipeline.geometry.Geometry`
        holds them."""
        return cls(n_slices=int(grid.size_zyx[0]), slice_spacing_mm=float(grid.spacing_mm[2]))


class _Grid(Protocol):
    @property
    def size_zyx(self) -> tuple[int, int, int]: ...

    @property
    def spacing_mm(self) -> tuple[float, float, float]: ...


@dataclass(frozen=True)
class SourceNodes:
    """The nodes measured in one mask (the expert reference or the model's prediction)."""

    source: NodeSource
    nodes: tuple[NodeMeasurement, ...]
    tracking_uids: tuple[str, ...] = ()
    """Each node's tracking UID (as in its SEG segment and SR group), in the order of ``nodes``."""

    @property
    def burden(self) -> Burden:
        from pipeline.measure.burden import series_burden

        return series_burden(self.nodes)


@dataclass(frozen=True)
class SeriesOutcome:
    """Everything the tables say about one cohort row. ``errors`` empty means status ``ok``."""

    identity: SeriesIdentity
    model: str
    pipeline_version: str
    processed_at: dt.datetime
    seconds: Mapping[Stage, float] = field(default_factory=dict)
    total_s: float | None = None
    grid: GridSummary | None = None
    sources: tuple[SourceNodes, ...] = ()
    seg_uri: str | None = None
    sr_uri: str | None = None
    qc_uri: str | None = None
    score: CaseScore | None = None
    detection: Detection | None = None
    errors: tuple[SeriesError, ...] = ()

    @property
    def status(self) -> SeriesStatus:
        return SeriesStatus.ERROR if self.errors else SeriesStatus.OK

    @property
    def series_uid(self) -> str:
        return self.identity.ct_series_instance_uid

    def nodes_of(self, source: NodeSource) -> tuple[NodeMeasurement, ...] | None:
        """The nodes of ``source``, or None when that mask was not measured."""
        for entry in self.sources:
            if entry.source == source:
                return entry.nodes
        return None

    @classmethod
    def failed(
        cls,
        identity: SeriesIdentity,
        error: SeriesError,
        *,
        model: str,
        pipeline_version: str,
        seconds: Mapping[Stage, float] | None = None,
        total_s: float | None = None,
        grid: GridSummary | None = None,
    ) -> SeriesOutcome:
        """A failed series: its error, the grid if it was decoded, and the time spent; no
        measurements or scores are kept (its nodes would be incomplete)."""
        return cls(
            identity=identity,
            model=model,
            pipeline_version=pipeline_version,
            processed_at=dt.datetime.now(dt.timezone.utc),
            seconds=dict(seconds or {}),
            total_s=total_s,
            grid=grid,
            errors=(error,),
        )


def finite_or_none(value: float | None) -> float | None:
    """NaN (an undefined score) is stored as null."""
    return None if value is None or math.isnan(value) else value

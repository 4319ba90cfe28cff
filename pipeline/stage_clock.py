"""Seconds per stage of one series, and the stage it is in: one clock for every process.

A series runs partly in the job's process and partly in isolated children
(:mod:`pipeline.isolation`). Each keeps a :class:`StageClock` the same way: stage code
calls the clock with the stage it enters (it is a :class:`StageReporter`), which ends the
stage running and starts that one, or times a block with :meth:`StageClock.stage`. A child's
clock also announces each stage to the parent, whose clock then knows where a crash happened,
and its seconds travel back with the child's result and are merged into the parent's clock.
So no stage code holds a timer of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from pipeline.enums import Stage


class StageReporter(Protocol):
    """What stage code is given: called with each stage it enters."""

    def __call__(self, stage: Stage) -> None: ...


class StageClock:
    """The stage running (``current``, kept after a failure so the error names it), seconds per
    stage, and seconds since the clock was made (:meth:`total_s`)."""

    def __init__(self, first: Stage = Stage.COHORT, *, announce: Callable[[Stage], None] | None = None):
        self.current = first
        self.seconds: dict[Stage, float] = {}
        self._announce = announce
        self._made = time.perf_counter()
        self._lap: float | None = None  # when the running stage started; None while none is timed

    def __call__(self, stage: Stage) -> None:
        """Enter ``stage``: the running one ends (its seconds are counted) and ``stage`` starts."""
        self.stop()
        self.current = stage
        self._lap = time.perf_counter()
        if self._announce is not None:
            self._announce(stage)

    def start(self) -> None:
        """Time the current stage from now, unannounced (a child starts in the stage its parent
        expects it to)."""
        self.stop()
        self._lap = time.perf_counter()

    def stop(self) -> None:
        """Count the running stage's seconds; the clock then times nothing until the next stage."""
        if self._lap is not None:
            self.add(self.current, time.perf_counter() - self._lap)
            self._lap = None

    @contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        """Time the block as ``stage``."""
        self(stage)
        try:
            yield
        finally:
            self.stop()

    def add(self, stage: Stage, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def merge(self, seconds: Mapping[Stage, float]) -> None:
        """Count another clock's seconds (a child's) in this one."""
        for stage, value in seconds.items():
            self.add(stage, value)

    def total_s(self) -> float:
        """Seconds since the clock was made, to 0.1 ms."""
        return round(time.perf_counter() - self._made, 4)

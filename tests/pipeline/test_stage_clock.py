"""The one stage clock: entering a stage ends the one running, blocks are timed, clocks merge."""

from __future__ import annotations

import time

import pytest

from pipeline.enums import Stage
from pipeline.stage_clock import StageClock


def test_entering_a_stage_ends_the_running_one() -> None:
    announced: list[Stage] = []
    clock = StageClock(announce=announced.append)
    assert clock.current == Stage.COHORT and clock.seconds == {}
    clock(Stage.FETCH)
    time.sleep(0.05)
    clock(Stage.DECODE)
    time.sleep(0.02)
    clock.stop()
    assert announced == [Stage.FETCH, Stage.DECODE] and clock.current == Stage.DECODE
    assert clock.seconds[Stage.FETCH] >= 0.05 and clock.seconds[Stage.DECODE] >= 0.02
    assert Stage.COHORT not in clock.seconds  # nothing was timed before the first stage
    clock.stop()  # stopped already: nothing more is counted
    assert clock.seconds[Stage.DECODE] < 0.05 + 0.02


def test_start_times_the_first_stage_unannounced() -> None:
    announced: list[Stage] = []
    clock = StageClock(Stage.MEASURE, announce=announced.append)
    clock.start()
    time.sleep(0.02)
    clock.stop()
    assert announced == [] and clock.seconds[Stage.MEASURE] >= 0.02


def test_a_block_is_timed_and_a_failure_keeps_its_stage() -> None:
    clock = StageClock()
    with pytest.raises(RuntimeError), clock.stage(Stage.INFERENCE):
        time.sleep(0.02)
        raise RuntimeError("the model failed")
    assert clock.current == Stage.INFERENCE and clock.seconds[Stage.INFERENCE] >= 0.02
    with clock.stage(Stage.INFERENCE):
        pass
    assert clock.seconds[Stage.INFERENCE] >= 0.02  # added, not replaced


def test_another_clocks_seconds_are_added() -> None:
    clock = StageClock()
    clock.add(Stage.FETCH, 1.0)
    clock.merge({Stage.FETCH: 0.5, Stage.DECODE: 2.0})
    assert clock.seconds == {Stage.FETCH: 1.5, Stage.DECODE: 2.0}
    assert 0 <= clock.total_s() < 5

"""Running a job here (``beam_jobs.launch.run_job_here``) or handing it to a runner that runs it
without the launcher (``hand_over`` and ``wait_for_job``), shared by ``lnq run`` and ``lnq
export-training``. Dataflow cannot run offline, so that runner is a stand-in with Dataflow's result
interface (``has_job``, ``job_id()``, ``wait_until_finish()``); the lock and the local runner are
the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import lock
from beam_jobs.launch import Submitted, hand_over, run_job_here, wait_for_job
from beam_jobs.publish import RunFailed

CLOUD = ["--runner=DataflowRunner", "--project=my-project", "--region=europe-west4", "--job_name=lnq-1"]


class _Result:
    has_job = True

    def __init__(self, state: str | Exception) -> None:
        self._state = state

    def job_id(self) -> str:
        return "2026-12-05_01_02_03-42"

    def wait_until_finish(self) -> str:
        if isinstance(self._state, Exception):
            raise self._state
        return self._state


class _Pipeline:
    def __init__(self, result: _Result | Exception) -> None:
        self._result = result

    def run(self) -> _Result:
        if isinstance(self._result, Exception):
            raise self._result
        return self._result


def _hand(tmp_path: Path, result: _Result | Exception, *, wait: bool, extra: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    out = str(tmp_path / "out")
    held = lock.acquire(out)
    try:
        handed = hand_over(
            _Pipeline(result),  # type: ignore[arg-type]
            PipelineOptions([*CLOUD, *extra]),
            held,
            n_rows=3,
            output_as_given="gs://b/out",
            publishes="publishes the tables",
            wait=wait,
        )
    finally:
        held.release()
    return out, held, handed


def _lock_record(out: str) -> dict:  # type: ignore[type-arg]
    return json.loads((Path(out) / "_lnq" / "lock.json").read_text())


def test_a_submitted_job_holds_the_lock_and_the_launcher_says_so(tmp_path: Path) -> None:
    out, _, handed = _hand(tmp_path, _Result("DONE"), wait=False)
    assert handed == Submitted(
        "submitted DataflowRunner job 2026-12-05_01_02_03-42 (3 cohort rows); it publishes the tables as "
        "its last step"
    )
    job = _lock_record(out)["job"]  # the launcher exited: the lock is the job's
    assert (job["runner"], job["job_id"], job["project"], job["region"], job["job_name"]) == (
        "DataflowRunner",
        "2026-12-05_01_02_03-42",
        "my-project",
        "europe-west4",
        "lnq-1",
    )


def test_a_job_file_is_never_waited_for(tmp_path: Path) -> None:
    out, _, handed = _hand(tmp_path, _Result("DONE"), wait=True, extra=("--template_location=/t/job.json",))
    assert isinstance(handed, Submitted)
    assert handed.message.startswith("wrote the job file /t/job.json (3 cohort rows); the job holds the lock")
    assert _lock_record(out)["job"]["runner"] == "DataflowRunner"


def test_a_refused_submission_leaves_the_output_unlocked(tmp_path: Path) -> None:
    with pytest.raises(
        RunFailed, match="DataflowRunner did not take the job: quota exceeded; nothing was submitted"
    ):
        _hand(tmp_path, RuntimeError("quota exceeded"), wait=True)
    assert not (tmp_path / "out" / "_lnq" / "lock.json").exists()


def test_waiting_for_a_job_that_ends_done_keeps_its_lock_for_its_last_step(tmp_path: Path) -> None:
    out, held, result = _hand(tmp_path, _Result("JobState.DONE"), wait=True)
    wait_for_job(result, "DataflowRunner", out, held.token, resume="finished series are kept")
    assert _lock_record(out)["token"] == held.token  # the job's last step releases it, not the launcher


@pytest.mark.parametrize(
    ("state", "said"),
    [("JobState.FAILED", "ended JobState.FAILED"), (RuntimeError("gone\nmore"), "ended failed (gone)")],
)
def test_a_job_that_does_not_end_done_is_a_failure_and_its_lock_is_released(  # type: ignore[no-untyped-def]
    tmp_path: Path, state, said
) -> None:
    out, held, result = _hand(tmp_path, _Result(state), wait=True)
    with pytest.raises(RunFailed) as failed:
        wait_for_job(result, "DataflowRunner", out, held.token, resume="finished cases are kept")
    assert str(failed.value) == (
        f"DataflowRunner job 2026-12-05_01_02_03-42 {said}; finished cases are kept: run again to resume"
    )
    assert not (Path(out) / "_lnq" / "lock.json").exists()


class _Incomplete(Exception):
    pass


def _failing(exc: Exception):  # type: ignore[no-untyped-def]
    import apache_beam as beam

    def fail(_: int) -> None:
        raise exc

    p = beam.Pipeline(runner="FnApiRunner")
    _ = p | beam.Create([1]) | "Finish" >> beam.Map(fail)
    return p


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (
            lock.OutputLocked("output /o: this run no longer holds the lock /o/_lnq/lock.json; nothing"),
            "output /o: this run no longer holds the lock /o/_lnq/lock.json; nothing",
        ),
        (_Incomplete("2 of 3 cohort rows have no result"), "2 of 3 cohort rows have no result"),
        (ZeroDivisionError("division by zero"), "the job failed: "),
    ],
    ids=["ours", "named", "other"],
)
def test_a_job_run_here_fails_in_one_line_without_beams_wrapping(raised: Exception, said: str) -> None:
    with pytest.raises(RunFailed) as failed:
        run_job_here(
            _failing(raised),
            otherwise=lambda exc: f"the job failed: {type(exc).__name__}",
            ours=(_Incomplete,),
        )
    message = str(failed.value)
    if said.endswith(": "):  # not ours: the caller's line about the runner's failure
        assert message.startswith(said), message
    else:  # ours: as it said it, without Beam's "[while running 'Finish']" and stack
        assert message == said

"""Durable runs: results kept as series finish, resume, atomic publish, one writer, strict checks.

In-process runs call ``lnq``'s own ``main`` (exit codes and one-line messages included); the
kill tests run ``lnq`` as a child process and SIGKILL it at seeded random moments.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_jobs import publish as publish_module
from beam_jobs.cli import main
from beam_jobs.publish import read_table
from pipeline.outputs.schemas import TABLES
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.phantoms import make_phantom


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    base = tmp_path_factory.mktemp("durable")
    rows = []
    for i in range(4):
        p = make_phantom(
            base / f"p{i}",
            patient_id=f"d{i}",
            seed=90 + i,
            shape_zyx=(20, 64, 64),
            noise_sd=0.0,
            anatomy=False,
        )
        rows.append(cohort_row(p, ct_url=str(p.ct_dir), seg_url=str(p.seg_path)))
    path = base / "cohort.parquet"
    write_cohort(path, rows)
    return path, rows


def _digest(out: Path) -> dict[str, str]:
    """Bytes of every published table file (what a reader of the tables sees)."""
    return {
        str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
        for table in TABLES
        for f in sorted((out / table).glob("*"))
    }


def test_cohort_and_option_mistakes_touch_nothing(cohort, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path, rows = cohort
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("a file the project did not write")
    cases = [
        (
            ["--cohort", str(write_cohort(tmp_path / "dup.parquet", [rows[0], rows[1], rows[0]]))],
            "more than once",
        ),
        (["--cohort", str(write_cohort(tmp_path / "empty.parquet", []))], "has no rows"),
        (["--cohort", str(path), "--limit", "0"], "--limit 0: expected a positive number"),
        (["--cohort", str(tmp_path / "absent.parquet")], "cannot be read"),
        (["--cohort", str(path), "--modle", "torchscript:m.pt"], "did you mean --model?"),
        (["--cohort", str(path), "--work-dir", str(tmp_path / "absent-dir")], "cannot be written"),
    ]
    for extra, message in cases:
        code = main(["run", "--output", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert sorted(os.listdir(out)) == ["mine.txt"]


def _kept(out: Path) -> dict[str, int]:
    """Finished series in the store, with the time each record was written."""
    return {f.name: f.stat().st_mtime_ns for f in (out / "_lnq" / "results").glob("*/ok/*.json")}


def test_resume_publish_and_foreign_files(cohort, tmp_path: Path) -> None:
    path, rows = cohort
    out = tmp_path / "out"
    (out / "series").mkdir(parents=True)
    (out / "series" / "notes.txt").write_text("mine")
    (out / "seg").mkdir()
    (out / "seg" / "other.dcm").write_bytes(b"not ours")
    assert main(["run", "--cohort", str(path), "--output", str(out), "--log-level", "INFO"]) == 0
    first = _digest(out)
    assert read_table(str(out), "series").num_rows == 4
    # resume: nothing to do, the same tables come back; --log-level works after the subcommand
    kept = _kept(out)
    assert len(kept) == 4
    assert main(["run", "--cohort", str(path), "--output", str(out), "--log-level", "DEBUG"]) == 0
    assert _kept(out) == kept  # nothing was processed again
    assert read_table(str(out), "series").num_rows == 4
    # --fresh reprocesses everything
    assert main(["run", "--cohort", str(path), "--output", str(out), "--fresh"]) == 0
    assert all(_kept(out)[name] > written for name, written in kept.items())
    assert set(_digest(out)) == set(first)
    assert (out / "series" / "notes.txt").read_text() == "mine"  # never ours, never deleted
    assert (out / "seg" / "other.dcm").read_bytes() == b"not ours"
    # a smaller cohort publishes only its rows
    assert (
        main(["run", "--cohort", str(write_cohort(tmp_path / "two.parquet", rows[:2])), "--output", str(out)])
        == 0
    )
    assert read_table(str(out), "series").num_rows == 2


def test_a_torn_kept_result_is_redone_by_the_next_run(cohort, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A kept result cut short is seen when the run decides what to reuse: that series alone is
    redone, the others are kept, and the tables come back the same."""
    path, _ = cohort
    out = tmp_path / "out"
    assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    before = _digest(out)
    kept = _kept(out)
    torn = sorted(kept)[1]
    (next((out / "_lnq" / "results").glob(f"*/ok/{torn}"))).write_text('{"series": ')  # cut short
    with caplog.at_level("INFO", logger="beam_jobs.launch"):
        assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    assert f"series {torn[: -len('.json')]} is redone: its kept result is unreadable" in caplog.text
    redone = _kept(out)
    assert redone[torn] > kept[torn] and all(redone[n] == kept[n] for n in kept if n != torn)
    assert read_table(str(out), "series").num_rows == 4
    assert _digest(out).keys() == before.keys()


def test_every_series_failing_exits_3(cohort, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _, rows = cohort
    bad = [dict(r, ct_series_url=str(tmp_path / "nowhere" / str(i))) for i, r in enumerate(rows[:2])]
    code = main(
        [
            "run",
            "--cohort",
            str(write_cohort(tmp_path / "bad.parquet", bad)),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert code == 3
    assert "0 ok, 2 failed of 2 series" in capsys.readouterr().out
    errors = read_table(str(tmp_path / "o"), "errors").to_pylist()
    assert {e["stage"] for e in errors} == {"fetch"}


def test_disk_full_while_publishing_leaves_the_previous_tables(
    cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    path, rows = cohort
    out = tmp_path / "out"
    assert (
        main(["run", "--cohort", str(write_cohort(tmp_path / "two.parquet", rows[:2])), "--output", str(out)])
        == 0
    )
    before = _digest(out)
    real = publish_module.synced_file
    calls = []

    @contextlib.contextmanager
    def full(target: str):  # type: ignore[no-untyped-def]
        calls.append(target)
        with real(target) as f:
            yield f
            if len(calls) >= 2:  # the second table of the publish, once written
                raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(publish_module, "synced_file", full)
    code = main(["run", "--cohort", str(path), "--output", str(out)])
    assert code != 0 and "No space left on device" in capsys.readouterr().err
    assert _digest(out) == before  # every table as it was, none torn
    assert not [f for t in TABLES for f in os.listdir(out / t) if ".tmp" in f]  # no partial files left


def test_a_publish_interrupted_between_renames_is_completed_by_the_next_run(
    cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, rows = cohort
    out = tmp_path / "out"
    assert (
        main(["run", "--cohort", str(write_cohort(tmp_path / "two.parquet", rows[:2])), "--output", str(out)])
        == 0
    )
    real = os.replace
    renamed = []

    def crash_after_first(src: str, dst: str) -> None:
        if str(src).endswith(".tmp") and "part-" in os.path.basename(src):
            if renamed:
                raise KeyboardInterrupt  # killed between the renames of two tables
            renamed.append(dst)
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash_after_first)
    assert main(["run", "--cohort", str(path), "--output", str(out)]) == 130
    monkeypatch.setattr(os, "replace", real)
    assert (out / "_lnq" / "publish.json").exists()
    # the next run, even a resume with nothing to do, rolls the publish forward first
    assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    assert {t: read_table(str(out), t).num_rows > 0 for t in ("series", "nodes")} == {
        "series": True,
        "nodes": True,
    }
    assert read_table(str(out), "series").num_rows == 4
    assert not (out / "_lnq" / "publish.json").exists()


def _progress_lines(text: str) -> int:
    return sum(
        1 for line in text.splitlines() if "] series " in line and line.split("[", 1)[-1][:1].isdigit()
    )


@pytest.mark.slow
def test_kill_at_random_points_keeps_tables_and_finished_series(cohort, tmp_path: Path) -> None:
    """SIGKILL at seeded random moments of a run: the published tables stay exactly as they were,
    every series that finished is kept, and a resume skips exactly those."""
    path, _ = cohort
    out = tmp_path / "out"
    two = write_cohort(tmp_path / "two.parquet", list(pq.read_table(path).to_pylist())[:2])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    first = subprocess.run(
        [*LNQ, "run", "--cohort", str(two), "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    published = _digest(out)
    rng = random.Random(7)
    for attempt in range(3):
        proc = subprocess.Popen(
            [*LNQ, "run", "--cohort", str(path), "--output", str(out), "--fresh"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        time.sleep(rng.uniform(3.0, 9.0))
        proc.send_signal(signal.SIGKILL)
        log, _ = proc.communicate(timeout=60)
        assert _digest(out) == published or "published:" in log, attempt  # unchanged unless it got to publish
        published = _digest(out)
        kept = list((out / "_lnq" / "results").glob("*/ok/*.json"))
        assert len(kept) >= min(_progress_lines(log), 4)
    resumed = subprocess.run(
        [*LNQ, "run", "--cohort", str(path), "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = len(list((out / "_lnq" / "results").glob("*/ok/*.json")))
    assert read_table(str(out), "series").num_rows == 4 and done == 4
    assert not list(out.glob("**/*.tmp*"))


KILLED_BEFORE_PUBLISH = """
import os, signal, sys
import beam_jobs.job_graph as graph
graph.publish_run = lambda request, **_: os.kill(os.getpid(), signal.SIGKILL)  # the last series is kept
from beam_jobs.cli import entry_point
sys.argv = ["lnq", *sys.argv[1:]]
entry_point()
"""


@pytest.mark.slow
def test_a_job_killed_between_its_last_series_and_the_publish_is_finished_by_the_next_run(
    cohort, tmp_path: Path
) -> None:
    """Publishing is the job's own last step: a job that dies right before it leaves every series
    kept and the old tables (none here); the next run processes nothing and publishes."""
    path, _ = cohort
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_PUBLISH, "run", "--cohort", str(path), "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list((out / "_lnq" / "results").glob("*/ok/*.json"))) == 4
    assert not any((out / table).exists() for table in TABLES)
    assert (out / "_lnq" / "lock.json").exists()  # its holder is gone: the next run takes it over
    finished = subprocess.run(
        [*LNQ, "run", "--cohort", str(path), "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "4 already done with these settings (skipped), 0 to process" in finished.stderr
    assert "taking over a stale lock" in finished.stderr
    assert read_table(str(out), "series").num_rows == 4
    assert not (out / "_lnq" / "lock.json").exists()


@pytest.mark.slow
def test_an_unreachable_bucket_stops_the_run_before_the_first_series(cohort, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Not the series' fault: when the first series cannot even be listed, all with the same
    error, the run stops at once with one line (exit 1) and touches nothing."""
    from tests.support.s3 import free_port

    _, rows = cohort
    remote = [
        dict(r, ct_series_url=f"s3://idc-open-data/{i:08d}-0000-0000-0000-000000000000/*")
        for i, r in enumerate(rows)
    ]
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--cohort",
            str(write_cohort(tmp_path / "remote.parquet", remote)),
            "--output",
            str(out),
            "--s3-endpoint",
            f"http://127.0.0.1:{free_port()}",  # nothing listens there
        ]
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert "no series could be fetched from http://127.0.0.1:" in err and "is the network reachable?" in err
    assert len(err.strip().splitlines()) == 1
    assert "connection refused" in err and "make demo" in err  # the cause once, and what to do offline
    assert "<series>" not in err and "idc-open-data" not in err and err.count("RequestError") == 0
    assert not out.exists()  # not even a lock file (it left _lnq/lock.guard behind)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_says_how_to_resume(cohort, tmp_path: Path) -> None:
    """SIGTERM mid-run: exit 130 with a line saying how to resume, no child process or temporary
    folder left, the lock released, finished series kept, the published tables untouched."""
    from tests.support.faults import read_leftovers, under_subreaper

    path, _ = cohort
    out, work = tmp_path / "out", tmp_path / "work"
    work.mkdir()
    leftovers = tmp_path / "leftovers.json"
    command = [*LNQ, "run", "--cohort", str(path), "--output", str(out), "--work-dir", str(work)]
    proc = subprocess.Popen(  # below a subreaper: whatever of the run's own tree outlives it is listed
        under_subreaper(command, leftovers, grace_s=1.0),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:  # wait for the first finished series
        lines.append(line)
        if "[1/4] series" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted; finished series are kept; run the same command again to resume" in rest
    assert list(work.iterdir()) == []
    assert not (out / "_lnq" / "lock.json").exists()
    assert not (out / "series").exists()  # nothing was published
    assert len(list((out / "_lnq" / "results").glob("*/ok/*.json"))) >= 1
    assert read_leftovers(leftovers) == []  # no fork server, decoding child or s5cmd of this run


@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused(cohort, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _ = cohort
    out = tmp_path / "out"
    first = subprocess.Popen(
        [*LNQ, "run", "--cohort", str(path), "--output", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stderr is not None
    for line in first.stderr:  # the first run holds the output now
        if "[1/4] series" in line:
            break
    code = main(["run", "--cohort", str(path), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "is being written by another lnq run (host" in err and f"PID {first.pid}" in err
    _, rest = first.communicate(timeout=120)
    assert first.returncode == 0, rest
    assert read_table(str(out), "series").num_rows == 4  # the first run published, untouched by the second

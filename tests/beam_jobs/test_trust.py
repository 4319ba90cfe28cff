"""Trust, round three (beam side): no stale or lost results, nothing outside the output touched.

Each class of defect is attacked the way a hostile or unlucky user would: outputs pruned by a
``--limit`` publish, moved, or reached through another working directory; code or a model that
changed under the same names; runs of different settings on one output; bookkeeping under ``_lnq/``
edited to point outside the output; symbolic links; kept results that no longer fit; cohorts with
holes; a manifest that cannot be written; work dirs shared between hosts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest

from beam_jobs.cli import main
from beam_jobs.publish import read_table
from pipeline.outputs.schemas import COHORT_SCHEMA, TABLES
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.models import HuWindow, save_torchscript
from tests.support.phantoms import make_phantom

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    base = tmp_path_factory.mktemp("trust")
    rows = []
    for i in range(3):
        p = make_phantom(
            base / f"p{i}",
            patient_id=f"t{i}",
            seed=500 + i,
            shape_zyx=(16, 48, 48),
            noise_sd=0.0,
            anatomy=False,
        )
        rows.append(cohort_row(p, ct_url=str(p.ct_dir), seg_url=str(p.seg_path)))
    path = base / "cohort.parquet"
    write_cohort(path, rows)
    return path, rows


def _kept(out: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in (out / "_lnq" / "results").glob("*/ok/*.json")}


def _files_pointed_to(out: Path, output_as_given: str) -> list[Path]:
    """Every file the published series table points to, as a local path (and each must exist)."""
    paths = []
    for row in read_table(str(out), "series").to_pylist():
        for column in ("seg_uri", "sr_uri", "qc_uri"):
            if row[column]:
                assert row[column].startswith(output_as_given.rstrip("/") + "/"), row[column]
                paths.append(out / row[column][len(output_as_given.rstrip("/")) + 1 :])
    return paths


def _all_present(out: Path, output_as_given: str | None = None) -> None:
    missing = [p for p in _files_pointed_to(out, output_as_given or str(out)) if not p.is_file()]
    assert not missing, missing


# ---- 1. resume reuses a result only when its files are there and its own ---------------------------


def test_a_limit_publish_then_a_full_rerun_redoes_what_the_limit_removed(
    cohort, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    path, rows = cohort
    out = tmp_path / "out"
    assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    _all_present(out)
    assert main(["run", "--cohort", str(path), "--output", str(out), "--limit", "1"]) == 0
    # the --limit publish removed the other series' files (they are not in its tables)
    assert not (out / "seg" / f"{rows[2]['ct_series_instance_uid']}.dcm").exists()
    with caplog.at_level("INFO", logger="beam_jobs.launch"):
        assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    assert "1 already done with these settings (skipped), 2 to process" in caplog.text
    assert "is missing" in caplog.text
    _all_present(out)
    assert read_table(str(out), "series").num_rows == 3


def test_a_moved_output_and_a_relative_output_from_elsewhere_resume_without_losing_files(
    cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    path, _ = cohort
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(["run", "--cohort", str(path), "--output", "rel/out"]) == 0
    out = tmp_path / "a" / "rel" / "out"
    _all_present(out, "rel/out")
    kept = _kept(out)
    # the same output through another working directory: everything is reused, nothing deleted
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    with caplog.at_level("INFO", logger="beam_jobs.launch"):
        assert main(["run", "--cohort", str(path), "--output", "../a/rel/out"]) == 0
    assert "3 already done with these settings (skipped), 0 to process" in caplog.text
    assert _kept(out) == kept
    _all_present(out, "../a/rel/out")
    # moved: the same again
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    caplog.clear()
    with caplog.at_level("INFO", logger="beam_jobs.launch"):
        assert main(["run", "--cohort", str(path), "--output", str(moved)]) == 0
    assert "3 already done with these settings (skipped), 0 to process" in caplog.text
    _all_present(moved)


def test_a_file_replaced_by_other_bytes_is_not_taken_for_the_results_own(
    cohort, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    path, rows = cohort
    out = tmp_path / "out"
    assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    qc = out / "qc" / f"{rows[0]['ct_series_instance_uid']}.png"
    size = qc.stat().st_size
    qc.write_bytes(b"\0" * size)  # the same size, other bytes
    with caplog.at_level("INFO", logger="beam_jobs.launch"):
        assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    assert f"qc/{rows[0]['ct_series_instance_uid']}.png is not the file this result wrote" in caplog.text
    assert qc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # redone


# ---- 2. the settings key follows the code ---------------------------------------------------------


@pytest.mark.slow
def test_an_upgrade_that_changes_a_measurement_is_not_resumed_with_the_old_numbers(
    cohort, tmp_path: Path
) -> None:
    """The same version number, an edited measurement: a resume must redo every series and publish
    the new numbers (the build version carries a digest of the package's source)."""
    path, _ = cohort
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    lnq = [*LNQ, "run", "--cohort", str(path), "--output", str(out)]
    assert subprocess.run(lnq, env=env, capture_output=True, timeout=300, cwd=tmp_path).returncode == 0
    before = {r["tracking_uid"]: r["volume_ml"] for r in read_table(str(out), "nodes").to_pylist()}
    upgraded = tmp_path / "upgraded"
    shutil.copytree(REPO / "pipeline", upgraded / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    nodes = upgraded / "pipeline" / "measure" / "nodes.py"
    text = nodes.read_text()
    assert "volume_ml=int(counts[i]) * geometry.voxel_volume_ml," in text
    nodes.write_text(
        text.replace(
            "volume_ml=int(counts[i]) * geometry.voxel_volume_ml,",
            "volume_ml=2 * int(counts[i]) * geometry.voxel_volume_ml,",
        )
    )
    done = subprocess.run(
        lnq,
        env={**env, "PYTHONPATH": f"{upgraded}{os.pathsep}{REPO}"},  # the upgraded package first
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "0 already done with these settings (skipped), 3 to process" in done.stderr
    after = {r["tracking_uid"]: r["volume_ml"] for r in read_table(str(out), "nodes").to_pylist()}
    assert after.keys() == before.keys()
    assert all(after[k] == pytest.approx(2 * before[k]) for k in before)
    versions = {r["pipeline_version"] for r in read_table(str(out), "series").to_pylist()}
    assert len(versions) == 1 and versions.pop().startswith("0.1.0+src.")


# ---- 3. a model is known by its content -----------------------------------------------------------


def test_another_model_with_the_same_path_size_and_time_gets_another_key(tmp_path: Path) -> None:
    from beam_jobs.settings_key import run_key
    from pipeline.models.spec import parse_model_spec
    from pipeline.process import ProcessConfig

    model = save_torchscript(HuWindow(40.0, 70.0), tmp_path / "m.pt")
    spec = parse_model_spec(f"torchscript:{model}")
    first, _ = run_key(ProcessConfig(model=spec))
    stat = model.stat()
    other = save_torchscript(HuWindow(60.0, 70.0), tmp_path / "other" / "m.pt")
    assert other.stat().st_size == stat.st_size  # same architecture: same size
    shutil.copyfile(other, model)  # in place: the same path (and inode)
    shutil.copyfile(other.with_suffix(".json"), model.with_suffix(".json"))
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same modification time
    assert model.stat().st_size == stat.st_size and model.stat().st_mtime_ns == stat.st_mtime_ns
    second, settings = run_key(ProcessConfig(model=spec))
    assert second != first
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert ("m.pt", f"sha256:{digest}") in [tuple(f) for f in settings["files"]]
    # the same content copied elsewhere is the same model files (the path is in the label, not the files)
    copy = tmp_path / "copy" / "m.pt"
    copy.parent.mkdir()
    shutil.copyfile(model, copy)
    shutil.copyfile(model.with_suffix(".json"), copy.with_suffix(".json"))
    _, copied = run_key(ProcessConfig(model=parse_model_spec(f"torchscript:{copy}")))
    assert copied["files"] == settings["files"]


# ---- 4. the files the tables point to belong to the published settings ------------------------------


@pytest.mark.slow
def test_reference_then_a_model_then_reference_again_publishes_only_the_references_files(
    cohort, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path, rows = cohort
    out = tmp_path / "out"
    model = save_torchscript(HuWindow(40.0, 70.0), tmp_path / "window.pt", patch_size=(8, 32, 32))
    reference = ["run", "--cohort", str(path), "--output", str(out)]
    assert main(reference) == 0
    assert main([*reference, "--model", f"torchscript:{model}", "--device", "cpu"]) == 0
    assert main(reference) == 0
    for seg in (p for p in _files_pointed_to(out, str(out)) if p.parent.name == "seg"):
        assert pydicom.dcmread(seg).SeriesDescription.startswith("reference"), seg
    assert {r["model"] for r in read_table(str(out), "series").to_pylist()} == {"reference"}


# ---- 8. paths read back from _lnq/ stay inside the output ---------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        "manifest-dotdot",
        "manifest-absolute",
        "journal-rename",
        "journal-outside",
        "symlinked-seg",
        "symlinked-lnq",
    ],
)
def test_bookkeeping_that_leads_outside_the_output_stops_the_run_and_touches_nothing(
    cohort, tmp_path: Path, capsys, tamper: str
) -> None:  # type: ignore[no-untyped-def]
    path, _ = cohort
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("not the project's")
    assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    if tamper == "manifest-dotdot":
        (out / "_lnq" / "manifest.json").write_text(
            '{"files": ["series/part-00000-of-00001.parquet", "../victim/file"]}'
        )
    elif tamper == "manifest-absolute":
        (out / "_lnq" / "manifest.json").write_text(f'{{"files": ["{victim / "file"}"]}}')
    elif tamper == "journal-rename":
        (out / "_lnq" / "publish.json").write_text(
            '{"renames": [["../victim/file", "series/part-00000-of-00001.parquet"]]}'
        )
    elif tamper == "journal-outside":
        (out / "_lnq" / "publish.json").write_text(
            '{"renames": [["series/.part-00000-of-00001.parquet.0123abcd.tmp", "../victim/file"]]}'
        )
    elif tamper == "symlinked-seg":
        shutil.rmtree(out / "seg")
        (out / "seg").symlink_to(victim)
    else:
        (tmp_path / "elsewhere").mkdir()
        shutil.move(str(out / "_lnq"), tmp_path / "elsewhere" / "_lnq")
        (out / "_lnq").symlink_to(tmp_path / "elsewhere" / "_lnq")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "_lnq" not in p.parts}
    capsys.readouterr()
    assert main(["run", "--cohort", str(path), "--output", str(out), "--fresh"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert any(why in err[0] for why in ("outside the output", "not a path inside", "never makes")), err
    assert err[0].startswith("lnq run: error: output ") and err[0].endswith("nothing was touched"), err
    assert (victim / "file").read_text() == "not the project's" and sorted(os.listdir(victim)) == ["file"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "_lnq" not in p.parts} == before


# ---- 11. stuck states that needed a hand -----------------------------------------------------------


def test_a_kept_result_that_no_longer_fits_the_schema_is_redone(cohort, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    import json

    path, rows = cohort
    out = tmp_path / "out"
    assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    uid = rows[1]["ct_series_instance_uid"]
    kept = next((out / "_lnq" / "results").glob(f"*/ok/{uid}.json"))
    raw = json.loads(kept.read_text())
    del raw["series"]["n_slices"]  # kept by a version whose series table was another shape
    raw["series"]["renamed_column"] = 1
    kept.write_text(json.dumps(raw))
    with caplog.at_level("INFO", logger="beam_jobs.launch"):
        assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0
    assert f"series {uid} is redone: its kept result is unreadable" in caplog.text
    assert read_table(str(out), "series").num_rows == 3


def test_a_cohort_row_without_its_ct_series_is_a_usage_error_before_the_run(
    cohort, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    _, rows = cohort
    holes = [rows[0], dict(rows[1], ct_series_instance_uid=None)]
    schema = pa.schema([f.with_nullable(True) for f in COHORT_SCHEMA])
    bad = tmp_path / "holes.parquet"
    pq.write_table(pa.Table.from_pylist(holes, schema=schema), bad)
    out = tmp_path / "out"
    assert main(["run", "--cohort", str(bad), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"lnq run: error: cohort {bad}: 1 rows have no ct_series_instance_uid (the first is row 2); "
        "every row must name its CT series"
    ]
    assert not out.exists()


def test_a_manifest_that_cannot_be_written_says_the_tables_were_replaced(
    cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    import beam_jobs.publish as publish

    path, _ = cohort
    out = tmp_path / "out"
    real = publish.write_atomically

    def no_manifest(target: str, data: bytes) -> None:
        if target.endswith("manifest.json"):
            raise OSError(28, "No space left on device")
        real(target, data)

    monkeypatch.setattr(publish, "write_atomically", no_manifest)
    assert main(["run", "--cohort", str(path), "--output", str(out)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "the tables were replaced, but the manifest of the project's files could not be written" in line
    assert all((out / t / "part-00000-of-00001.parquet").exists() for t in TABLES)
    monkeypatch.setattr(publish, "write_atomically", real)
    assert main(["run", "--cohort", str(path), "--output", str(out)]) == 0  # and the next run records it
    assert (out / "_lnq" / "manifest.json").exists()


# ---- 12. shared scratch space ----------------------------------------------------------------------


def test_a_live_run_folder_of_another_host_or_container_is_never_removed(tmp_path: Path) -> None:
    """Only folders whose owner's lock can be taken are removed: a run elsewhere (here: another
    process holding its lock, whatever PID or host its folder's name says) keeps its folder."""
    from beam_jobs.work_folder import remove_abandoned, run_folder

    base = tmp_path / "scratch"
    base.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from beam_jobs.work_folder import run_folder; "
            "import time\nwith run_folder(sys.argv[2]) as f:\n print(f, flush=True); time.sleep(60)",
            str(REPO),
            str(base),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        live = Path(holder.stdout.readline().strip())
        assert live.is_dir()
        os.rename(live, base / "lnq-run-otherhost-1-0000000000")  # a PID that means nothing here
        live = base / "lnq-run-otherhost-1-0000000000"
        abandoned = base / "lnq-run-thishost-999999-dead"
        abandoned.mkdir()
        (abandoned / ".owner").touch()  # no one holds it: its run ended without cleaning up
        unknown = base / "lnq-run-12345-old"
        unknown.mkdir()  # no owner file (an older version's): not provably abandoned
        assert remove_abandoned(str(base)) == [str(abandoned)]
        with run_folder(str(base)) as mine:
            assert Path(mine).is_dir() and live.is_dir() and unknown.is_dir()
        assert not Path(mine).exists()
    finally:
        holder.kill()
        holder.wait()
    assert remove_abandoned(str(base)) == [str(live)]  # its owner is gone now

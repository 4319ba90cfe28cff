"""``lnq export-training``: the Beam job end to end on phantoms, its durable runs, and its failures.

Runs call ``lnq``'s own ``main`` in this process (exit codes and one-line messages included), or
``lnq`` as a child process where its output lines are the point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_jobs import export_cases, export_training
from beam_jobs.cli import main
from pipeline.training.nifti import read_nifti
from pipeline.training.settings import IGNORE, LYMPH_NODE
from pipeline.training.splits import fold_of
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.phantoms import Phantom, make_phantom

DATASET = "Dataset501_LNQ"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], dict[str, Phantom]]:
    """Five good cases (two full, three partial; one with slices from head to feet, one implicit VR;
    patient pt1 with two series) and two bad ones (a CT that is not there, another case's SEG)."""
    from pydicom.uid import ImplicitVRLittleEndian

    base = tmp_path_factory.mktemp("export")
    specs = {
        "full": dict(patient_id="pt0", annotation="full"),
        "partial": dict(patient_id="pt1", annotation="partial"),
        "partial z descending": dict(patient_id="pt2", annotation="partial", z_descending=True),
        "full implicit VR": dict(patient_id="pt3", annotation="full", transfer_syntax=ImplicitVRLittleEndian),
        "partial, second series of pt1": dict(patient_id="pt1", annotation="partial"),
    }
    phantoms = {
        name: make_phantom(base / f"p{i}", seed=40 + i, shape_zyx=(16, 48, 48), **spec)  # type: ignore[arg-type]
        for i, (name, spec) in enumerate(specs.items())
    }
    rows = [cohort_row(p, ct_url=str(p.ct_dir), seg_url=str(p.seg_path)) for p in phantoms.values()]
    bad = make_phantom(base / "bad", seed=49, shape_zyx=(16, 48, 48), patient_id="pt5", annotation="partial")
    rows.append(cohort_row(bad, ct_url=str(base / "nowhere"), seg_url=str(bad.seg_path)))  # fetch fails
    wrong_seg = make_phantom(base / "wrong", seed=50, shape_zyx=(16, 48, 48), patient_id="pt6")
    rows.append(cohort_row(wrong_seg, ct_url=str(wrong_seg.ct_dir), seg_url=str(bad.seg_path)))  # not its SEG
    return write_cohort(base / "cohort.parquet", rows), rows, phantoms


def _cases(dataset: Path) -> dict[str, dict]:
    return {r["ct_series_instance_uid"]: r for r in pq.read_table(dataset / "cases.parquet").to_pylist()}


def _case_files(dataset: Path) -> dict[str, int]:
    return {
        str(f.relative_to(dataset)): f.stat().st_mtime_ns
        for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
        for f in sorted((dataset / folder).glob("*"))
    }


@pytest.mark.slow
def test_export_end_to_end_and_resume(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, rows, phantoms = cohort
    out = tmp_path / "out"
    done = subprocess.run(
        [*LNQ, "export-training", "--cohort", str(path), "--output", str(out), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3, done.stderr[-3000:]  # finished, some cases failed
    assert done.stdout.strip().endswith(
        f"5 ok, 2 failed of 7 cases; 3 training, 2 test; dataset in {out / DATASET}"
    )
    assert "/7] series" in done.stderr  # progress, done/total, as lnq run
    dataset = out / DATASET

    described = json.loads((dataset / "dataset.json").read_text())
    assert described["labels"] == {"background": 0, "lymph_node": 1, "ignore": 2}
    assert (described["numTraining"], described["numTest"]) == (3, 2)
    assert (described["channel_names"], described["file_ending"]) == ({"0": "CT"}, ".nii.gz")
    assert described["lnq_export"]["partial_background"]["rule"] == "hu"

    cases = _cases(dataset)
    assert len(cases) == 7
    files = _case_files(dataset)
    assert len(files) == 10  # two files for each of the five good cases, none for the failed ones
    for name, p in phantoms.items():
        case = cases[p.series_uid]
        assert case["status"] == "ok", name
        assert case["split"] == ("test" if p.annotation == "full" else "train"), name
        image, image_grid = read_nifti(str(dataset / case["image_file"]))
        labels, label_grid = read_nifti(str(dataset / case["label_file"]))
        np.testing.assert_array_equal(image, p.as_decoded(p.hu))
        np.testing.assert_array_equal(labels == LYMPH_NODE, p.as_decoded(p.mask))
        assert image_grid.grid_differences(p.decoded_geometry, tolerance=1e-4) == []
        assert label_grid.grid_differences(image_grid, tolerance=0.0) == []
        assert (IGNORE in labels) == (p.annotation == "partial"), name
        assert case["lymph_node_voxels"] == int(p.mask.sum())
    failed = [r for r in rows if cases[r["ct_series_instance_uid"]]["status"] == "error"]
    assert len(failed) == 2
    for row in failed:
        case = cases[row["ct_series_instance_uid"]]
        assert case["image_file"] is None and case["fold"] is None
        assert not any(
            f.startswith(("imagesTr/" + case["case_id"], "labelsTr/" + case["case_id"])) for f in files
        )

    errors = pq.read_table(dataset / "errors.parquet").to_pylist()
    by_uid = {e["ct_series_instance_uid"]: e for e in errors}
    assert len(errors) == 2
    assert by_uid[failed[0]["ct_series_instance_uid"]]["stage"] == "fetch"
    assert by_uid[failed[1]["ct_series_instance_uid"]]["stage"] == "reference"
    assert all(
        e["model"] == "export-training" and e["ct_series_instance_uid"] in e["message"] for e in errors
    )

    folds = json.loads((dataset / "splits_final.json").read_text())
    training = sorted(c["case_id"] for c in cases.values() if c["split"] == "train" and c["status"] == "ok")
    assert sorted(case for fold in folds for case in fold["val"]) == training
    by_fold = fold_of(folds)
    pt1 = [c["case_id"] for c in cases.values() if c["patient_id"] == "pt1"]
    assert len(pt1) == 2 and by_fold[pt1[0]] == by_fold[pt1[1]]  # a patient's series stay together
    assert all(cases[uid]["fold"] == by_fold.get(cases[uid]["case_id"]) for uid in cases)
    manifest = json.loads((dataset / "_lnq" / "manifest.json").read_text())["files"]
    assert set(files) | {
        "dataset.json",
        "splits_final.json",
        "cases.parquet",
        "cases.csv",
        "errors.parquet",
    } == set(manifest)

    again = subprocess.run(
        [*LNQ, "export-training", "--cohort", str(path), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 3, again.stderr[-3000:]
    assert "7 cases, 5 already exported with these settings (skipped), 2 to export" in again.stderr
    assert _case_files(dataset) == files  # finished cases are not written again
    assert json.loads((dataset / "dataset.json").read_text()) == described


@pytest.mark.slow
def test_fresh_and_a_case_that_fails_later_leaves_the_dataset(cohort, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _, rows, phantoms = cohort
    good = write_cohort(tmp_path / "good.parquet", rows[:3])
    out = tmp_path / "out"
    args = ["export-training", "--output", str(out), "--test-annotation", "none"]
    assert main([*args, "--cohort", str(good)]) == 0
    assert "3 ok, 0 failed of 3 cases; 3 training, 0 test" in capsys.readouterr().out
    dataset = out / DATASET
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 3
    before = _case_files(dataset)
    # the first case's CT has gone: a fresh export fails it, and its files leave the dataset
    broken = [dict(rows[0], ct_series_url=str(tmp_path / "gone")), *rows[1:3]]
    assert main([*args, "--fresh", "--cohort", str(write_cohort(tmp_path / "b.parquet", broken))]) == 3
    assert "2 ok, 1 failed of 3 cases; 2 training, 0 test" in capsys.readouterr().out
    after = _case_files(dataset)
    gone = _cases(dataset)[rows[0]["ct_series_instance_uid"]]["case_id"]
    assert sorted(set(before) - set(after)) == [f"imagesTr/{gone}_0000.nii.gz", f"labelsTr/{gone}.nii.gz"]
    assert all(after[f] > before[f] for f in after)  # --fresh wrote the others again
    described = json.loads((dataset / "dataset.json").read_text())
    assert described["numTraining"] == 2
    assert gone not in json.dumps(json.loads((dataset / "splits_final.json").read_text()))
    # moving the full case to the test set moves its files; the old ones go
    full = phantoms["full"]
    assert main(["export-training", "--output", str(out), "--cohort", str(good)]) == 0
    case = _cases(dataset)[full.series_uid]
    assert case["split"] == "test" and (dataset / case["image_file"]).is_file()
    assert not (dataset / "imagesTr" / f"{case['case_id']}_0000.nii.gz").exists()


@pytest.mark.slow
def test_a_failed_copy_leaves_no_half_case(cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, rows, _ = cohort
    real = export_cases.copy_atomically

    def full_disk(source: str, target: str) -> None:
        if "/labelsTr/" in target:
            raise OSError(28, "No space left on device")
        real(source, target)

    monkeypatch.setattr(export_cases, "copy_atomically", full_disk)
    assert (
        main(
            [
                "export-training",
                "--output",
                str(tmp_path),
                "--cohort",
                str(write_cohort(tmp_path / "c.parquet", rows[1:2])),
            ]
        )
        == 3
    )
    dataset = tmp_path / DATASET
    assert _case_files(dataset) == {}  # the image was copied, then removed with the failed case
    (error,) = pq.read_table(dataset / "errors.parquet").to_pylist()
    assert (error["stage"], error["error_type"]) == ("export", "OSError")
    assert "No space left on device" in error["message"]
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 0


@pytest.mark.slow
def test_a_crash_outside_the_case_handlers_is_an_error_row(
    cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rows, _ = cohort
    real = export_cases.export_one
    crashing = rows[1]["ct_series_instance_uid"]

    def export_one(raw, planned, config):  # type: ignore[no-untyped-def]
        if raw["ct_series_instance_uid"] == crashing:
            raise ZeroDivisionError("a bug")
        return real(raw, planned, config)

    monkeypatch.setattr(export_cases, "export_one", export_one)
    cohort_path = write_cohort(tmp_path / "c.parquet", rows[:3])
    assert main(["export-training", "--output", str(tmp_path), "--cohort", str(cohort_path)]) == 3
    dataset = tmp_path / DATASET
    (error,) = pq.read_table(dataset / "errors.parquet").to_pylist()
    assert (error["ct_series_instance_uid"], error["stage"], error["error_type"]) == (
        crashing,
        "unexpected",
        "ZeroDivisionError",
    )
    assert _cases(dataset)[crashing]["status"] == "error"
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 1  # one full case is the test


@pytest.mark.slow
def test_a_case_without_a_result_fails_the_job_and_finishes_nothing(
    cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    _, rows, _ = cohort
    real = export_cases.ResultStore.write
    lost = rows[1]["ct_series_instance_uid"]

    def write(self, rows):  # type: ignore[no-untyped-def]
        if rows.uid != lost:
            real(self, rows)

    monkeypatch.setattr(export_cases.ResultStore, "write", write)
    cohort_path = write_cohort(tmp_path / "c.parquet", rows[:2])
    assert main(["export-training", "--output", str(tmp_path), "--cohort", str(cohort_path)]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 cohort rows have no result" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / DATASET / "dataset.json").exists()


def test_usage_mistakes_touch_nothing(cohort, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _, _ = cohort
    out = tmp_path / "out"
    (out / "Dataset501_Other").mkdir(parents=True)
    mistakes = [
        (["--dataset-id", "1000"], "dataset id 1000 is not in 1..999"),
        (["--dataset-name", "a/b"], "dataset name 'a/b'"),
        (["--air-below-hu", "800"], "air below 800 HU must be lower than bone above 700 HU"),
        ([], "already holds Dataset501_Other with dataset id 501"),
        (["--test-anotation", "none"], "did you mean --test-annotation?"),
        (["--limit", "0"], "--limit 0: expected a positive number"),
    ]
    for extra, message in mistakes:
        code = main(["export-training", "--cohort", str(path), "--output", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(os.listdir(out)) == ["Dataset501_Other"]
    assert main(["export-training", "--help"]) == 0
    assert "--partial-background" in capsys.readouterr().out


def _export_pipeline(  # type: ignore[no-untyped-def]
    p, rows, dataset: str, *, work_dir: str | None, token: str, job_holds_lock: bool, fetch=None
):
    """The export's pipeline on ``rows`` (all pending), as the launcher builds it."""
    from pipeline.fetch.s5cmd import FetchConfig
    from pipeline.isolation import Limits
    from pipeline.training.cases import plan_cases
    from pipeline.training.settings import KnownBackground

    plan = plan_cases(rows, test_annotation="full")
    config = export_training.ExportConfig(
        dataset=dataset,
        fetch=fetch or FetchConfig(),
        background=KnownBackground(),
        limits=Limits(),
        work_dir=work_dir,
        test_annotation="full",
    )
    return export_training.build(
        p,
        list(zip(rows, plan, strict=True)),
        config=config,
        plan=plan,
        store=export_cases.case_store(dataset, config.key()),
        sources={},
        dataset_name="LNQ",
        progress_dir=None,
        lock_token=token,
        job_holds_lock=job_holds_lock,
    )


@pytest.mark.slow
def test_a_job_handed_the_lock_finishes_the_dataset_and_releases_it(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """On Dataflow the launcher hands the dataset's lock to the job and returns: the finish is the
    pipeline's last step, fed by every case, and releases the lock. Run here as that job runs."""
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from beam_jobs import lock

    _, rows, _ = cohort
    dataset = str(tmp_path / DATASET)
    held = lock.acquire(dataset)
    held.hand_to_job(lock.JobHandle(runner="DataflowRunner", handed_at=lock.utc_now(), job_id="2026-12-05_1"))
    held.release()  # the launcher has exited: the lock stays, the job's
    assert (tmp_path / DATASET / "_lnq" / "lock.json").is_file()
    with TestPipeline(runner="FnApiRunner") as p:
        summary = _export_pipeline(
            p, rows[:2], dataset, work_dir=str(tmp_path), token=held.token, job_holds_lock=True
        )
        expected = export_training.ExportSummary(
            n_cohort=2, n_ok=2, n_failed=0, n_training=1, n_test=1, dataset=dataset
        )
        assert_that(summary, equal_to([expected]))
    assert json.loads((tmp_path / DATASET / "dataset.json").read_text())["numTraining"] == 1
    assert not (tmp_path / DATASET / "_lnq" / "lock.json").exists()  # released by the job


@pytest.mark.slow
def test_a_job_whose_lock_was_taken_over_does_not_finish_the_dataset(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """When another run took the dataset over (the job's lock went stale), the job's last step
    refuses to write dataset.json over it: the pipeline fails naming the lock."""
    from apache_beam.testing.test_pipeline import TestPipeline

    from beam_jobs import lock

    _, rows, _ = cohort
    dataset = str(tmp_path / DATASET)
    other = lock.acquire(dataset)
    try:
        with pytest.raises(Exception, match="no longer holds the lock .*; the dataset was not finished"):
            with TestPipeline(runner="FnApiRunner") as p:
                _export_pipeline(
                    p, rows[:1], dataset, work_dir=str(tmp_path), token="an-older-run", job_holds_lock=True
                )
        assert not (tmp_path / DATASET / "dataset.json").exists()
        assert (tmp_path / DATASET / "_lnq" / "lock.json").is_file()  # still the other run's
    finally:
        other.release()


@pytest.mark.slow
def test_export_to_cloud_storage(cohort, gcs_bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from apache_beam.io.filesystems import FileSystems

    _, rows, phantoms = cohort
    cohort_path = write_cohort(tmp_path / "c.parquet", rows[:2])
    output = f"gs://{gcs_bucket}/training"
    for _ in range(2):  # the second run resumes: both cases are done, the dataset is finished again
        summary = export_training.run(["--cohort", str(cohort_path), "--output", output])
        assert (summary.n_ok, summary.n_training, summary.n_test) == (2, 1, 1)
    dataset = f"{output}/{DATASET}"
    paths = sorted(m.path[len(dataset) + 1 :] for m in FileSystems.match([f"{dataset}/**"])[0].metadata_list)
    names = {p.series_uid: p.patient_id for p in phantoms.values()}
    train, test = (names[r["ct_series_instance_uid"]] for r in rows[1::-1])
    assert [p for p in paths if not p.startswith("_lnq/")] == sorted(
        [
            "cases.csv",
            "cases.parquet",
            "dataset.json",
            "errors.parquet",
            f"imagesTr/{train}_0000.nii.gz",
            f"imagesTs/{test}_0000.nii.gz",
            f"labelsTr/{train}.nii.gz",
            f"labelsTs/{test}.nii.gz",
        ]
    )  # one training case: no folds to write
    assert "_lnq/lock.json" not in paths
    local = tmp_path / "label.nii.gz"
    with FileSystems.open(f"{dataset}/labelsTr/{train}.nii.gz") as f:
        local.write_bytes(f.read())
    labels, _ = read_nifti(str(local))
    partial = phantoms["partial"]
    np.testing.assert_array_equal(labels == LYMPH_NODE, partial.mask)


def test_the_launcher_stays_light() -> None:
    """``--help`` imports neither Beam nor numpy; the job's launcher leaves the decoders (and scipy,
    used by the labels) to the cases' fork server, as ``lnq run`` does."""
    helped = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from beam_jobs.cli import main; main(['export-training', '--help']);"
            "print(sorted(m for m in ('apache_beam', 'numpy', 'pyarrow') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert helped.stdout.strip().splitlines()[-1] == "[]"
    heavy = ("pydicom", "highdicom", "scipy", "matplotlib", "torch")
    probe = f"import sys, beam_jobs.export_training; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_job_is_built_for_remote_workers(cohort) -> None:  # type: ignore[no-untyped-def]
    """On Dataflow every step, the finish included, is shipped to workers: the pipeline goes through
    Beam's portable form and back (every function and setting pickled and restored), and the
    finish is one of its steps (Dataflow's options are lnq run's: tests/beam_jobs/test_dataflow.py)."""
    import apache_beam as beam

    from pipeline.fetch.s5cmd import GCS_ENDPOINT, FetchConfig

    _, rows, _ = cohort
    p = beam.Pipeline()
    _export_pipeline(
        p,
        rows,
        "gs://b/out/Dataset501_LNQ",
        work_dir=None,
        token="handed-to-the-job",
        job_holds_lock=True,
        fetch=FetchConfig(endpoint_url=GCS_ENDPOINT),
    )
    proto = p.to_runner_api()
    names = {t.unique_name.split("/")[0] for t in proto.components.transforms.values()}
    assert {"Cases", "Spread", "Export", "DeadLetters", "AllCases", "Finish"} <= names
    restored = beam.Pipeline.from_runner_api(proto, p.runner, p._options)
    assert restored.to_runner_api().components.transforms.keys() == proto.components.transforms.keys()


def _one_case_cohort(phantom: Phantom, tmp_path: Path) -> Path:
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    return write_cohort(tmp_path / "cohort.parquet", [row])


DATAFLOW_DRY_RUN = [
    "--runner",
    "DataflowRunner",
    "--region",
    "us-central1",
    "--temp_location",
    "gs://bkt-x/tmp",
    "--dry_run",
    "True",
]


def test_a_failed_dataflow_dry_run_is_one_line_and_exit_1(phantom: Phantom, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """As lnq run's: Beam's own refusal of the job (here a --setup_file that is not there) is one line
    naming the dry run, exit 1, not a traceback."""
    cohort = _one_case_cohort(phantom, tmp_path)
    code = main(
        ["export-training", "--cohort", str(cohort), "--output", "gs://bkt-x/training"]
        + [*DATAFLOW_DRY_RUN, "--project", "my-project", "--setup_file", str(tmp_path / "no" / "setup.py")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("lnq export-training: error: DataflowRunner dry run failed: The file ")


def test_a_malformed_project_id_is_refused_as_lnq_run_refuses_it(
    phantom: Phantom, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    """A project id Google Cloud would refuse is a usage error before anything is built, for the
    export as for lnq run (whose dry run refuses it too): not a dry run that says all is well."""
    cohort = _one_case_cohort(phantom, tmp_path)
    for command in ("export-training", "run"):
        code = main(
            [
                command,
                "--cohort",
                str(cohort),
                "--output",
                "gs://bkt-x/o",
                *DATAFLOW_DRY_RUN,
                "--project",
                "abc",
            ]
        )
        out, err = capsys.readouterr()
        assert code == 2, (command, out)
        assert err.strip().splitlines() == [
            f"lnq {command}: error: project 'abc' is not a Google Cloud project id"
        ]

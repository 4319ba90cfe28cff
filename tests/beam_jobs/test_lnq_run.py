"""End to end: ``lnq run`` through Beam on phantoms served by a local S3 server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_jobs.launch import pipeline_options
from beam_jobs.publish import read_table
from pipeline.geometry import Geometry
from pipeline.measure.nodes import measure_nodes
from pipeline.outputs.schemas import COHORT_SCHEMA, TABLES
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.phantoms import make_phantom


def _lnq(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LNQ, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def e2e_cohort(tmp_path_factory: pytest.TempPathFactory, upload_series) -> tuple[Path, list, list]:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("e2e")
    phantoms = [
        make_phantom(
            base / f"p{i}",
            patient_id=f"phantom_{i:03d}",
            seed=20 + i,
            shape_zyx=(36 + 4 * i, 96, 96),
            slice_spacing_mm=2.5 + 0.5 * i,
        )
        for i in range(3)
    ]
    rows = [
        cohort_row(p, ct_url=upload_series(p.ct_dir), seg_url=upload_series(p.seg_path)) for p in phantoms
    ]
    # a row whose UID would climb out of the output folder, and one whose CT is not there
    rows.append(
        cohort_row(
            phantoms[0],
            ct_url=rows[0]["ct_series_url"],
            seg_url=rows[0]["seg_series_url"],
            ct_series_instance_uid="../../escaped",
        )
    )
    rows.append(
        cohort_row(
            phantoms[1],
            ct_url="s3://idc-open-data/0000-missing/*",
            seg_url=rows[1]["seg_series_url"],
            ct_series_instance_uid="1.2.826.0.1.9",
        )
    )
    path = base / "cohort.parquet"
    write_cohort(path, rows)
    return path, phantoms, rows


@pytest.mark.slow
def test_lnq_run_end_to_end_and_rerun_overwrites(e2e_cohort, s3_endpoint: str, tmp_path: Path) -> None:
    cohort, phantoms, rows = e2e_cohort
    out = tmp_path / "results"
    done = _lnq(
        "run",
        "--cohort",
        str(cohort),
        "--output",
        str(out),
        "--s3-endpoint",
        s3_endpoint,
        "--workers",
        "2",
        cwd=tmp_path,
    )
    assert done.returncode == 3, done.stderr[-3000:]  # the run finished, some series failed
    assert "3 ok, 2 failed of 5 series" in done.stdout
    assert "/5]" in done.stderr  # progress, done/total

    series = read_table(str(out), "series").to_pylist()
    assert sorted(r["ct_series_instance_uid"] for r in series) == sorted(
        r["ct_series_instance_uid"] for r in rows
    )
    by_uid = {r["ct_series_instance_uid"]: r for r in series}
    nodes = read_table(str(out), "nodes").to_pylist()
    errors = read_table(str(out), "errors").to_pylist()
    for p in phantoms:
        s = by_uid[p.series_uid]
        assert s["status"] == "ok" and s["n_slices"] == p.hu.shape[0]
        geometry = Geometry(p.hu.shape, p.origin_mm, p.spacing_mm, (1, 0, 0, 0, 1, 0, 0, 0, 1))
        truth = measure_nodes(p.mask, geometry)
        got = [n for n in nodes if n["ct_series_instance_uid"] == p.series_uid]
        assert [n["voxel_count"] for n in got] == [t.voxel_count for t in truth]
        assert [n["volume_ml"] for n in got] == pytest.approx([t.volume_ml for t in truth])
        assert s["reference_volume_ml"] == pytest.approx(p.mask.sum() * np.prod(p.spacing_mm) / 1000)
    assert by_uid["../../escaped"]["status"] == "error"
    stages = {e["ct_series_instance_uid"]: (e["stage"], e["message"]) for e in errors}
    assert stages["../../escaped"][0] == "cohort"
    assert stages["1.2.826.0.1.9"][0] == "fetch"
    assert "no files found" in stages["1.2.826.0.1.9"][1]
    assert sorted(os.listdir(tmp_path)) == ["results"]  # nothing written beside the output

    first = {t: read_table(str(out), t) for t in TABLES}
    again = _lnq(
        "run", "--cohort", str(cohort), "--output", str(out), "--s3-endpoint", s3_endpoint, cwd=tmp_path
    )
    assert again.returncode == 3, again.stderr[-3000:]
    # resume: the three finished series are skipped, the two failed ones redone
    assert "5 series, 3 already done with these settings (skipped), 2 to process" in again.stderr
    for table in TABLES:
        assert len(os.listdir(out / table)) == 1
        second = read_table(str(out), table)
        stable = [c for c in second.column_names if c != "processed_at" and not c.endswith("_s")]
        assert second.select(stable).equals(first[table].select(stable)), table


def test_lnq_cohort_cli(tmp_path: Path) -> None:
    done = _lnq("cohort", "--out", str(tmp_path / "c.parquet"), "--annotation", "full", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.num_rows == 120 and table.schema.equals(COHORT_SCHEMA)
    limited = _lnq("cohort", "--out", str(tmp_path / "l.parquet"), "--limit", "4", cwd=tmp_path)
    assert limited.returncode == 0 and pq.read_table(tmp_path / "l.parquet").num_rows == 4


def test_local_runner_is_named_explicitly() -> None:
    options = pipeline_options([], workers=3).get_all_options()
    assert options["runner"] == "FnApiRunner"
    assert options["direct_running_mode"] == "multi_threading"
    assert options["direct_num_workers"] == 3
    explicit = pipeline_options(["--direct_running_mode=multi_processing"], workers=2).get_all_options()
    assert explicit["direct_running_mode"] == "multi_processing"  # Beam's own option wins
    dataflow = pipeline_options(["--runner=DataflowRunner"], workers=3).get_all_options()
    assert dataflow["runner"] == "DataflowRunner" and dataflow["direct_num_workers"] == 1


@pytest.fixture(scope="module")
def clean_cohort(tmp_path_factory: pytest.TempPathFactory, upload_series) -> tuple[Path, list]:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("clean-e2e")
    phantoms = [
        make_phantom(
            base / f"c{i}",
            patient_id=f"clean_{i}",
            seed=60 + i,
            noise_sd=0.0,
            anatomy=False,
            shape_zyx=(30 + 6 * i, 80, 96),
            slice_spacing_mm=2.0 + i,
        )
        for i in range(2)
    ]
    rows = [
        cohort_row(p, ct_url=upload_series(p.ct_dir), seg_url=upload_series(p.seg_path)) for p in phantoms
    ]
    path = base / "cohort.parquet"
    write_cohort(path, rows)
    return path, phantoms


@pytest.mark.slow
def test_lnq_run_model_mode_lines_up_and_writes_segs(clean_cohort, s3_endpoint: str, tmp_path: Path) -> None:
    import highdicom as hd

    from tests.support.models import HuWindow, save_torchscript

    cohort, phantoms = clean_cohort
    model = save_torchscript(
        HuWindow(40.0, 70.0),
        tmp_path / "models" / "window.pt",
        name="window",
        version="7",
        spacing_mm=[2.5, 1.5, 1.5],
        patch_size=(8, 48, 48),
    )
    done = _lnq(
        "run",
        "--cohort",
        str(cohort),
        "--output",
        "out",
        "--s3-endpoint",
        s3_endpoint,
        "--model",
        f"torchscript:{model}",
        "--device",
        "cpu",
        "--workers",
        "2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 ok, 0 failed of 2 series" in done.stdout
    series = {r["ct_series_instance_uid"]: r for r in read_table(str(tmp_path / "out"), "series").to_pylist()}
    nodes = read_table(str(tmp_path / "out"), "nodes").to_pylist()
    for p in phantoms:
        s = series[p.series_uid]
        assert s["model"] == f"torchscript:{model}"
        assert s["seg_uri"] == f"out/seg/{p.series_uid}.dcm"  # the form --output was given in
        assert s["dsc"] > 0.85 and s["assd_mm"] < 1.0, s
        assert s["n_prediction_nodes"] == s["n_reference_nodes"] == 3
        seg = hd.seg.segread(tmp_path / s["seg_uri"])
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == p.series_uid
        assert seg.get_segment_description(1).algorithm_identification[0].AlgorithmName == "window"
        pred = sorted(
            (n for n in nodes if n["ct_series_instance_uid"] == p.series_uid and n["source"] == "prediction"),
            key=lambda n: n["node_index"],
        )
        ref = sorted(
            (n for n in nodes if n["ct_series_instance_uid"] == p.series_uid and n["source"] == "reference"),
            key=lambda n: n["node_index"],
        )
        for a, b in zip(pred, ref, strict=True):  # same nodes, same place
            assert (
                np.linalg.norm(
                    np.subtract(
                        [a["centroid_x_mm"], a["centroid_y_mm"], a["centroid_z_mm"]],
                        [b["centroid_x_mm"], b["centroid_y_mm"], b["centroid_z_mm"]],
                    )
                )
                < 1.0
            )
    assert sorted(os.listdir(tmp_path / "out" / "seg")) == sorted(f"{p.series_uid}.dcm" for p in phantoms)


@pytest.mark.slow
def test_lnq_run_nnunet_folder(clean_cohort, s3_endpoint: str, tmp_path: Path) -> None:
    pytest.importorskip("nnunetv2")
    from tests.support.models import make_nnunet_folder

    cohort, phantoms = clean_cohort
    folder = make_nnunet_folder(tmp_path / "Dataset999_LNQTiny")
    done = _lnq(
        "run",
        "--cohort",
        str(cohort),
        "--output",
        str(tmp_path / "out"),
        "--limit",
        "1",
        "--s3-endpoint",
        s3_endpoint,
        "--model",
        f"nnunet:{folder}",
        "--folds",
        "0",
        "--no-tta",
        "--step-size",
        "1.0",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (s,) = read_table(str(tmp_path / "out"), "series").to_pylist()
    assert s["status"] == "ok" and s["model"] == f"nnunet:{folder}"
    assert s["dsc"] is not None and s["inference_s"] > 0
    assert os.path.isfile(s["seg_uri"])


def test_unloadable_model_fails_before_any_series(clean_cohort, tmp_path: Path) -> None:
    cohort, _ = clean_cohort
    done = _lnq(
        "run",
        "--cohort",
        str(cohort),
        "--output",
        str(tmp_path / "out"),
        "--model",
        f"torchscript:{tmp_path / 'absent.pt'}",
        cwd=tmp_path,
    )
    assert done.returncode == 2  # a user's mistake: one line, no traceback
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "series").exists()

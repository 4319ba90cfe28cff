"""One series end to end, without Beam: rows for every outcome."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.dicom.volume import Geometry
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.measure.nodes import measure_nodes
from pipeline.outputs.schemas import ERRORS_SCHEMA, NODES_SCHEMA, SERIES_SCHEMA, conform
from pipeline.process import ProcessConfig, process_series
from tests.support.cohort import cohort_row
from tests.support.phantoms import make_phantom


def _config(endpoint: str = "http://127.0.0.1:9") -> ProcessConfig:
    return ProcessConfig(fetch=FetchConfig(endpoint_url=endpoint, attempts=1, backoff_s=0.0))


def test_reference_nodes_from_s3(phantom, upload_series, s3_endpoint: str) -> None:
    row = cohort_row(phantom, ct_url=upload_series(phantom.ct_dir), seg_url=upload_series(phantom.seg_path))
    result = process_series(row, config=_config(s3_endpoint))
    assert result.errors == []
    s = conform(result.series, SERIES_SCHEMA)
    assert s["status"] == "ok" and s["n_slices"] == 40
    geometry = Geometry((40, 128, 128), phantom.origin_mm, phantom.spacing_mm, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    expected = measure_nodes(phantom.mask, geometry)
    assert s["n_reference_nodes"] == len(phantom.nodes) == len(expected) == 3
    assert s["reference_volume_ml"] == pytest.approx(phantom.mask.sum() * np.prod(phantom.spacing_mm) / 1000)
    for stage in ("fetch_s", "decode_s", "reference_s", "measure_s", "total_s"):
        assert s[stage] is not None and s[stage] >= 0
    nodes = [conform(n, NODES_SCHEMA) for n in result.nodes]
    assert [n["voxel_count"] for n in nodes] == [e.voxel_count for e in expected]
    assert {n["source"] for n in nodes} == {"reference"}
    # every node's centroid lies near the centre of one of the ellipsoids that made it
    for n in nodes:
        centre = np.array([n["centroid_x_mm"], n["centroid_y_mm"], n["centroid_z_mm"]])
        distances = [np.linalg.norm(centre - np.array(e.center_mm)) for e in phantom.nodes]
        assert min(distances) < 1.0


def test_local_paths_work_without_s3(phantom) -> None:
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    result = process_series(row, config=_config())
    assert result.series["status"] == "ok" and result.series["n_reference_nodes"] == 3


@pytest.mark.parametrize(
    ("change", "stage", "error_type", "message"),
    [
        ({"ct_series_instance_uid": "../evil"}, "cohort", "CohortError", "not a DICOM UID"),
        ({"ct_series_url": "/nowhere/at/all"}, "fetch", "FetchError", "does not exist"),
        ({"ct_instance_count": 41}, "fetch", "FetchError", "expected 41"),
        ({"ct_series_instance_uid": "1.2.3.4"}, "decode", "DecodeError", "expected '1.2.3.4'"),
        ({"seg_series_url": None}, "reference", "ReferenceSegError", "no reference SEG"),
    ],
)
def test_failures_become_rows_naming_the_series(
    phantom, change: dict, stage: str, error_type: str, message: str
) -> None:
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path), **change)
    result = process_series(row, config=_config())
    series = conform(result.series, SERIES_SCHEMA)
    assert series["status"] == "error"
    assert series["ct_series_instance_uid"] == row["ct_series_instance_uid"]
    assert result.nodes == []
    (error,) = [conform(e, ERRORS_SCHEMA) for e in result.errors]
    assert (error["stage"], error["error_type"]) == (stage, error_type)
    assert message in error["message"]
    assert row["ct_series_instance_uid"] in error["message"]


def test_seg_of_another_series_is_a_reference_error(phantom, tmp_path: Path) -> None:
    other = make_phantom(tmp_path / "other", seed=77)
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(other.seg_path))
    result = process_series(row, config=_config())
    assert result.series["status"] == "error"
    assert result.errors[0]["stage"] == "reference"
    assert "not the CT series" in result.errors[0]["message"]


def test_unexpected_exception_is_caught_with_its_stage(phantom, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.process as process

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(process, "measure_nodes", broken)
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path))
    result = process.process_series(row, config=_config())
    assert result.series["status"] == "error"
    assert result.errors[0]["stage"] == "measure"
    assert result.errors[0]["error_type"] == "ZeroDivisionError"


def test_temporary_folders_are_removed(phantom, upload_series, s3_endpoint: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    row = cohort_row(phantom, ct_url=upload_series(phantom.ct_dir), seg_url=upload_series(phantom.seg_path))
    config = ProcessConfig(fetch=FetchConfig(endpoint_url=s3_endpoint), work_dir=str(work))
    assert process_series(row, config=config).series["status"] == "ok"
    assert list(work.iterdir()) == []

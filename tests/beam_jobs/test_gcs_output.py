"""Tables and SEGs land in Cloud Storage through Beam's filesystems (GCS emulator, offline)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from beam_jobs.launch import run
from beam_jobs.publish import read_table
from pipeline.outputs.schemas import COHORT_SCHEMA
from tests.support.cohort import cohort_row
from tests.support.models import HuWindow, save_torchscript
from tests.support.phantoms import make_phantom


@pytest.mark.slow
def test_run_writes_tables_and_segs_to_gcs(gcs_bucket: str, tmp_path: Path) -> None:
    p = make_phantom(tmp_path / "p", seed=71, shape_zyx=(24, 64, 64), noise_sd=0.0, anatomy=False)
    cohort = tmp_path / "cohort.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [cohort_row(p, ct_url=str(p.ct_dir), seg_url=str(p.seg_path))], schema=COHORT_SCHEMA
        ),
        cohort,
    )
    local_model = save_torchscript(HuWindow(40.0, 70.0), tmp_path / "window.pt", patch_size=(8, 32, 32))
    model = f"gs://{gcs_bucket}/models/window.pt"  # workers copy it (and its sidecar) to their disk
    for source, target in ((local_model, model), (local_model.with_suffix(".json"), model[:-3] + ".json")):
        with FileSystems.create(target) as f:
            f.write(source.read_bytes())
    output = f"gs://{gcs_bucket}/runs/test"
    for _ in range(2):  # the second run resumes: the series is done, the tables are published again
        summary = run(
            [
                "--cohort",
                str(cohort),
                "--output",
                output,
                "--model",
                f"torchscript:{model}",
                "--device",
                "cpu",
                "--report",
            ]
        )
        assert summary.report == f"{output}/report/index.html"
        assert (summary.n_ok, summary.n_failed) == (1, 0)
    (series,) = read_table(output, "series").to_pylist()
    assert series["seg_uri"] == f"{output}/seg/{p.series_uid}.dcm"
    assert series["dsc"] == pytest.approx(1.0)
    assert read_table(output, "nodes").num_rows == 6  # 3 reference + 3 predicted
    paths = sorted(m.path for m in FileSystems.match([f"{output}/**"])[0].metadata_list)
    work = [path for path in paths if path.startswith(f"{output}/_lnq/")]
    assert [path.rsplit("/", 2)[-2:] for path in work if "/results/" in path] == [
        ["ok", f"{p.series_uid}.json"]
    ]
    assert f"{output}/_lnq/manifest.json" in work
    assert not any(path.endswith(("lock.json", "publish.json")) for path in work)  # released, completed
    report = [path for path in paths if "/report/" in path]
    assert f"{output}/report/index.html" in report and any(path.endswith(".png") for path in report)
    assert [path for path in paths if path not in work and path not in report] == sorted(
        [
            f"{output}/errors/part-00000-of-00001.parquet",
            f"{output}/measurements/part-00000-of-00001.parquet",
            f"{output}/nodes/part-00000-of-00001.parquet",
            f"{output}/series/part-00000-of-00001.parquet",
            f"{output}/seg/{p.series_uid}.dcm",
            f"{output}/sr/{p.series_uid}.dcm",
            f"{output}/qc/{p.series_uid}.png",
        ]
    )
    local = tmp_path / "seg.dcm"
    with FileSystems.open(series["seg_uri"]) as f:
        local.write_bytes(f.read())
    assert hd.seg.segread(local).ReferencedSeriesSequence[0].SeriesInstanceUID == p.series_uid

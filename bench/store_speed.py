"""What durability costs (issue 10): one series' result write, and a resume over 513 done series.

Builds 513 series results shaped like a reference run's (a series row, 9 node rows each), then
times, on a local output folder: writing one result (atomically: temporary name, fsync, rename),
the listing a resume makes to find the done series, reading every result back, and publishing the
three tables; and end to end, ``lnq run`` on that output with every series already done
(start-up included), which is what a user waits for when nothing is left to do.

    .venv/bin/python bench/store_speed.py [--series 513]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rows(i: int):  # type: ignore[no-untyped-def]
    from pipeline.outputs.rows import OutcomeRows
    from pipeline.outputs.schemas import NODES_SCHEMA, SERIES_SCHEMA

    uid = f"1.2.826.0.1.3680043.10.999.{i + 1}"
    series = dict.fromkeys(SERIES_SCHEMA.names)
    series.update(
        ct_series_instance_uid=uid,
        patient_id=f"case_{i:04d}",
        status="ok",
        model="reference",
        pipeline_version="0.1.0",
        processed_at=dt.datetime.now(dt.timezone.utc),
        n_slices=108,
        total_s=1.0,
    )
    nodes = []
    for k in range(9):
        node = {name: 1.0 for name in NODES_SCHEMA.names}
        node.update(
            ct_series_instance_uid=uid,
            patient_id=f"case_{i:04d}",
            model="reference",
            source="reference",
            node_index=k + 1,
            voxel_count=100,
            recist_category="normal",
            tracking_uid=f"2.25.{i}{k}",
        )
        nodes.append(node)
    return OutcomeRows(series=series, nodes=nodes, errors=[])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=513)
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from beam_jobs.store import ResultStore, publish, run_key
    from pipeline.outputs.schemas import COHORT_SCHEMA
    from pipeline.process import ProcessConfig

    with tempfile.TemporaryDirectory(prefix="lnq-bench-") as tmp:
        out = Path(tmp) / "out"
        key, _ = run_key(ProcessConfig())
        store = ResultStore(str(out), key)
        results = [_rows(i) for i in range(args.series)]
        writes = []
        for rows in results:
            start = time.perf_counter()
            store.write(rows)
            writes.append(time.perf_counter() - start)
        start = time.perf_counter()
        done = store.done()
        listing_s = time.perf_counter() - start
        uids = [r.series["ct_series_instance_uid"] for r in results]
        start = time.perf_counter()
        read = store.read(uids)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        publish(str(out), [read[u] for u in uids])
        publish_s = time.perf_counter() - start
        cohort = Path(tmp) / "cohort.parquet"
        cohort_rows = [
            {
                "patient_id": r.series["patient_id"],
                "study_instance_uid": "1.2.3",
                "ct_series_instance_uid": r.series["ct_series_instance_uid"],
                "ct_series_url": "s3://idc-open-data/00000000-0000-0000-0000-000000000000/*",
                "seg_series_instance_uid": "1.2.4",
                "seg_series_url": "s3://idc-open-data/00000000-0000-0000-0000-000000000001/*",
                "annotation": "full",
                "ct_instance_count": 108,
                "ct_size_mb": 57.0,
            }
            for r in results
        ]
        pq.write_table(pa.Table.from_pylist(cohort_rows, schema=COHORT_SCHEMA), cohort)
        start = time.perf_counter()
        resumed = subprocess.run(
            [sys.executable, "-m", "beam_jobs.cli", "run", "--cohort", str(cohort), "--output", str(out)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        resume_s = time.perf_counter() - start
    assert len(done) == args.series == len(read), (len(done), len(read))
    print(f"{args.series} series, 9 nodes each, local output folder")
    print("| step | seconds |")
    print("|---|---|")
    worst_ms = max(writes) * 1000
    print(f"| write one series' result (median; max {worst_ms:.1f} ms) | {statistics.median(writes):.4f} |")
    print(f"| list the done series (what a resume reads first) | {listing_s:.3f} |")
    print(f"| read every result back | {read_s:.3f} |")
    print(f"| publish the three tables | {publish_s:.3f} |")
    print(f"| `lnq run` with every series done (exit {resumed.returncode}), wall | {resume_s:.2f} |")
    if resumed.returncode != 0:
        print(resumed.stderr[-2000:])


if __name__ == "__main__":
    main()

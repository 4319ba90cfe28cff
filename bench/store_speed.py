"""What durability costs (issue 10): one series' result write, and a resume over 513 done series;
and the memory of publishing a noisy model's cohort (513 series of 3,000 nodes), streamed or not.

Builds 513 series results shaped like a reference run's (a series row, 9 node rows each), then
times, on a local output folder: writing one result (atomically: temporary name, fsync, rename),
the listing a resume makes to find the done series, reading every result back, and publishing the
three tables; and end to end, ``lnq run`` on that output with every series already done
(start-up included), which is what a user waits for when nothing is left to do.

    .venv/bin/python -m bench.store_speed [--series 513]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import child_env, lnq_command


def _publish_peak_mib(out: str, uids: list[str], key: str, *, streamed: bool) -> tuple[float, float]:
    """Seconds and peak memory (MiB above the start) of one publish, in a fresh child process:
    streamed from the store as ``lnq run`` does, or with every result read into a list first."""
    code = f"""
import os, time
from bench._procmem import own_peak_rss_bytes, rss_bytes
from beam_jobs.publish import iter_results, publish
from beam_jobs.store import ResultStore
uids = {uids!r}
store = ResultStore({out!r}, {key!r})
base = rss_bytes(os.getpid())
start = time.perf_counter()
if {streamed!r}:
    publish({out!r}, iter_results(store, uids))
else:
    read = store.read(uids)
    publish({out!r}, [read[u] for u in uids])
print(time.perf_counter() - start, (own_peak_rss_bytes() - base) / 2**20)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=child_env()
    )
    seconds, mib = done.stdout.split()
    return float(seconds), float(mib)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=513)
    parser.add_argument(
        "--noisy-nodes", type=int, default=3000, help="nodes per series of the noisy-model publish"
    )
    args = parser.parse_args()

    from beam_jobs.publish import publish
    from beam_jobs.settings_key import run_key
    from beam_jobs.store import KeptResult, ResultStore
    from pipeline.demo.cohort import write_cohort
    from pipeline.process import ProcessConfig
    from tests.support.results import synthetic_outcome

    with tempfile.TemporaryDirectory(prefix="lnq-bench-") as tmp:
        out = Path(tmp) / "out"
        key, _ = run_key(ProcessConfig())
        store = ResultStore(str(out), key)
        results = [synthetic_outcome(i) for i in range(args.series)]
        writes = []
        for rows in results:
            start = time.perf_counter()
            store.write(KeptResult(rows))
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
        write_cohort(cohort, cohort_rows)
        start = time.perf_counter()
        resumed = subprocess.run(
            lnq_command("run", "--cohort", str(cohort), "--output", str(out)),
            capture_output=True,
            text=True,
            env=child_env(),
        )
        resume_s = time.perf_counter() - start
        noisy = Path(tmp) / "noisy"
        noisy_store = ResultStore(str(noisy), key)
        for i in range(args.series):
            noisy_store.write(KeptResult(synthetic_outcome(i, n_nodes=args.noisy_nodes)))
        sorted_uids = sorted(uids)
        memory = {
            streamed: _publish_peak_mib(str(noisy), sorted_uids, key, streamed=streamed)
            for streamed in (False, True)
        }
    assert len(done) == args.series == len(read), (len(done), len(read))
    print(f"{args.series} series, 9 nodes each, local output folder")
    print("| step | seconds |")
    print("|---|---|")
    worst_ms = max(writes) * 1000
    print(f"| write one series' result (median; max {worst_ms:.1f} ms) | {statistics.median(writes):.4f} |")
    print(f"| list the done series (what a resume reads first) | {listing_s:.3f} |")
    print(f"| read every result back | {read_s:.3f} |")
    print(f"| publish the tables | {publish_s:.3f} |")
    print(f"| `lnq run` with every series done (exit {resumed.returncode}), wall | {resume_s:.2f} |")
    print()
    print(f"publishing {args.series} series of {args.noisy_nodes} nodes each (a noisy model's output)")
    print("| how | seconds | peak MiB above the start |")
    print("|---|---|---|")
    for streamed, (seconds, mib) in memory.items():
        how = "streamed from the store (lnq run)" if streamed else "every result read into a list first"
        print(f"| {how} | {seconds:.1f} | {mib:.0f} |")
    if resumed.returncode != 0:
        print(resumed.stderr[-2000:])


if __name__ == "__main__":
    main()

"""What process isolation costs per series (issue 9), reference mode, on LNQ-sized phantoms.

For each size (512 x 512 x 108 slices, LNQ's median, and x 556, its largest) a phantom
CT and its reference SEG are written as DICOM on local disk, and ``process_series`` runs
on it several times with isolation on (fetch, decode and SEG reading in a child forked
from the fork server, arrays handed back as .npy files) and off (all in one process),
alternating, in a fresh process per setting so peak memory is its own. It prints the
median seconds per series of each, the difference, and the peak resident memory of the
worker process (the isolated children are forked from the fork server, not from it).

    .venv/bin/python -m bench.isolation_cost [--sizes 108 556] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench._procmem import own_peak_rss_bytes
from bench.harness import child_env, describe_machine, module_command


def child(row_path: str, isolate: bool, repeats: int) -> None:
    from pipeline.fetch.s5cmd import FetchConfig
    from pipeline.process import ProcessConfig, process_series

    row = json.loads(Path(row_path).read_text())
    config = ProcessConfig(fetch=FetchConfig(), isolate=isolate)
    seconds = []
    for _ in range(repeats + 1):  # the first run warms the fork server and the page cache
        start = time.perf_counter()
        outcome = process_series(row, config=config)
        seconds.append(time.perf_counter() - start)
        if outcome.errors:
            raise SystemExit(f"series failed: {outcome.errors}")
    print(
        json.dumps(
            {
                "isolate": isolate,
                "median_s": statistics.median(seconds[1:]),
                "first_s": seconds[0],
                "peak_rss_mib": own_peak_rss_bytes() / 2**20,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[108, 556])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1] == "1", int(args.child[2]))
        return
    from bench.pipeline_stages import make_series

    print(f"machine: {describe_machine()}")
    print(
        "| slices | isolated s | in-process s | cost s | parent peak MiB (isolated / not) | child peak MiB |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="lnq-bench-") as tmp:
        for n in args.sizes:
            row_path = Path(tmp) / f"row{n}.json"
            row_path.write_text(json.dumps(make_series(Path(tmp), n, s3=False)))
            result = {}
            for isolate in ("1", "0"):
                done = subprocess.run(
                    [*module_command(__spec__.name), "--child", str(row_path), isolate, str(args.repeats)],
                    env=child_env(),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result[isolate] = json.loads(done.stdout.strip().splitlines()[-1])
            on, off = result["1"], result["0"]
            cost = on["median_s"] - off["median_s"]
            print(
                f"| {n} | {on['median_s']:.2f} | {off['median_s']:.2f} | {cost:+.2f} "
                f"| {on['peak_rss_mib']:.0f} / {off['peak_rss_mib']:.0f} |"
            )


if __name__ == "__main__":
    main()

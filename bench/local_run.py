"""Where local users wait (issue 11): `lnq run` against the bare minimum, worker scaling, start-up,
help, and peak memory, in reference mode on LNQ-median phantoms served from a local S3 server.

Series are 512 x 512 x 108 phantoms (2.5 mm slices, 0.78 mm pixels, 9 nodes) written by
``bench/pipeline_stages.py: make_series`` (each with its own seed, so UIDs differ) and uploaded
to moto; s5cmd reads them with ``--no-sign-request`` as it reads IDC. Measured, in this order:

1. the bare minimum per series: ``s5cmd cp`` of the CT and of the SEG, then a SimpleITK
   ``ImageSeriesReader`` read of the CT, looped in this process; median seconds per series;
2. ``lnq run --cohort C --s3-endpoint URL --output DIR --fresh`` as a subprocess: wall time, each
   series' ``total_s`` (the series table) and the gaps between its ``[done/total]`` stderr lines;
   start-up = wall time of a one-series run minus that series' ``total_s``;
3. on all series: ``--workers 1``, ``--workers 2`` (today's mapping), and Beam's local modes named
   explicitly (``--direct_running_mode=multi_threading|multi_processing --direct_num_workers=2``),
   interleaved, ``--repeats`` times each, with the CPU seconds of each run's process tree
   (getrusage of reaped children; moto's own CPU is not in it); the Beam options each mode
   really gets from ``pipeline_options`` are printed;
4. ``lnq --help`` and ``lnq run --help`` wall times (median of 5);
5. peak memory of a one-series run on a 512 x 512 x 556 phantom (1.25 mm slices): RSS of the lnq
   process and all its descendants from /proc every 50 ms plus the time a sample takes (the achieved
   interval is printed; ``bench/_procmem.py``), peak of the sum
   and the largest single process (and the PSS sum, which counts shared pages once).

The last table prints each figure next to its goal from the issue. ``--s3 static`` serves the
series from ``bench/_static_s3.py`` instead of moto (about a third of moto's CPU per series; each
run prints what the stand-in spent), to see how much the stand-in's share of the two cores costs.

    .venv/bin/python -m bench.local_run [--series 10] [--repeats 2] [--skip-memory] [--s3 moto|static]
                                        [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench._procmem import TreeSampler
from bench.harness import ROOT, child_env, lnq_command, machine, module_command
from bench.pipeline_stages import make_series

GIB = 2**30
PROGRESS = re.compile(r"\[\d+/\d+\] series ")
MEDIAN_SLICES = 108
LARGEST_SLICES = 556
MODES: dict[str, list[str]] = {
    "--workers 1": ["--workers", "1"],
    "--workers 2": ["--workers", "2"],
    "multi_threading x2": ["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
    "multi_processing x2": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}
GOALS = {
    "speedup": 1.6,
    "inside_ratio": 1.5,
    "startup_s": 3.0,
    "help_s": 1.0,
    "peak_bytes": 2 * GIB,
}


@dataclass
class LnqRun:
    """One ``lnq run`` subprocess, as seen from outside and from its own tables."""

    label: str
    n_series: int
    wall_s: float
    series_total_s: list[float]
    progress_at_s: list[float]  # seconds after start of each '[done/total]' line
    stages_s: list[dict[str, float]] = field(default_factory=list)  # per series, from its table
    cpu_s: float = 0.0  # user + system seconds of the whole process tree (reaped descendants)
    peak: dict = field(default_factory=dict)
    machine_busy_s: float = 0.0  # CPU seconds the whole machine was busy (moto, s5cmd, children)
    server_cpu_s: float = 0.0  # CPU seconds the S3 stand-in spent during the run

    @property
    def first_progress_s(self) -> float | None:
        return self.progress_at_s[0] if self.progress_at_s else None

    @property
    def gaps_s(self) -> list[float]:
        return [b - a for a, b in zip(self.progress_at_s, self.progress_at_s[1:], strict=False)]


def distinct_series(work: Path, n_slices: int, index: int) -> dict:
    """``make_series`` with a seed of its own, so every phantom has its own UIDs."""
    import pipeline.demo.phantoms as phantoms

    original = phantoms.make_phantom

    def seeded(*args, **kwargs):  # type: ignore[no-untyped-def]
        return original(*args, **{**kwargs, "seed": kwargs.get("seed", 0) * 1000 + index})

    phantoms.make_phantom = seeded
    try:
        folder = work / f"series{n_slices}-{index}"
        folder.mkdir(parents=True)
        row = make_series(folder, n_slices, s3=True)
    finally:
        phantoms.make_phantom = original
    shutil.rmtree(folder)  # uploaded: the local copy is not needed
    return row


def bare_minimum(rows: list[dict], endpoint: str, work: Path) -> list[float]:
    """Seconds per series for s5cmd cp of CT and SEG plus a SimpleITK read of the CT."""
    import SimpleITK as sitk

    from pipeline.fetch.s5cmd import s5cmd_binary

    s5cmd = [s5cmd_binary(), "--no-sign-request", "--endpoint-url", endpoint, "cp"]
    seconds = []
    for i, row in enumerate(rows):
        dest = work / f"bare{i}"
        start = time.perf_counter()
        subprocess.run([*s5cmd, row["ct_series_url"], f"{dest}/ct/"], check=True, capture_output=True)
        subprocess.run([*s5cmd, row["seg_series_url"], f"{dest}/seg/"], check=True, capture_output=True)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dest / "ct")))
        image = reader.Execute()
        seconds.append(time.perf_counter() - start)
        if image.GetSize()[2] != row["ct_instance_count"]:
            raise SystemExit(f"bare minimum read {image.GetSize()} for {row['ct_instance_count']} slices")
        shutil.rmtree(dest)
    return seconds


def read_progress(proc: subprocess.Popen[str], start: float, progress: list[float], tail: list[str]) -> None:
    """Read an ``lnq run``'s stderr to its end: the seconds after ``start`` of each '[done/total]'
    line go to ``progress``, the last 40 lines to ``tail``."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if PROGRESS.search(line):
            progress.append(time.perf_counter() - start)
        tail.append(line)
        del tail[:-40]


def run_lnq(
    label: str,
    cohort: Path,
    *,
    endpoint: str,
    output: Path,
    extra: list[str],
    sample_memory: bool = False,
    server_pid: int | None = None,
) -> LnqRun:
    """Run ``lnq run`` on ``cohort``, time its '[done/total]' lines, read its series table back."""
    command = [
        *lnq_command(),
        "run",
        "--cohort",
        str(cohort),
        "--s3-endpoint",
        endpoint,
        "--output",
        str(output),
        "--fresh",
        *extra,
    ]
    progress: list[float] = []
    tail: list[str] = []
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = machine_busy_s()
    server_before = process_cpu_s(server_pid)
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid) if sample_memory else None
    if sampler:
        sampler.start()

    reader = threading.Thread(target=read_progress, args=(proc, start, progress, tail), daemon=True)
    reader.start()
    rc = proc.wait()
    wall_s = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_s = machine_busy_s() - busy_before
    server_s = process_cpu_s(server_pid) - server_before
    cpu_s = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    reader.join()
    peak = asdict(sampler.stop()) if sampler else {}
    series = finished_series(label, rc, tail, output)
    n = len(series)
    if len(progress) != n:
        print(f"warning: {label}: {len(progress)} progress lines for {n} series", file=sys.stderr)
    stages = stage_seconds(series)
    totals = [s["total_s"] for s in series]
    return LnqRun(label, n, wall_s, totals, progress, stages, cpu_s, peak, busy_s, server_s)


def finished_series(label: str, rc: int, tail: list[str], output: Path) -> list[dict]:
    """The series table of an ``lnq run`` that exited ``rc`` (its output then removed); it stops the
    benchmark, naming ``label``, when the run failed or a series is not ``ok``."""
    from beam_jobs.publish import read_table

    if rc != 0:
        raise SystemExit(f"{label}: lnq run exited {rc}:\n{''.join(tail)}")
    series = read_table(str(output), "series").to_pylist()
    bad = [s["status"] for s in series if s["status"] != "ok"]
    if bad:
        raise SystemExit(f"{label}: series not ok: {bad}")
    shutil.rmtree(output, ignore_errors=True)
    return series


def stage_seconds(series: list[dict]) -> list[dict[str, float]]:
    """Per series: timed stage -> seconds, from the series table's rows."""
    from pipeline.enums import TIMED_STAGES
    from pipeline.outputs.schemas import stage_column

    return [
        {st.value: s[stage_column(st)] for st in TIMED_STAGES if s[stage_column(st)] is not None}
        for s in series
    ]


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``), 0 without one."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_s3(kind: str, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The S3 stand-in the series are served from: ``moto`` (the tests' server) or ``static``
    (``bench/_static_s3.py`` over ``root``, which costs the machine far less CPU per request)."""
    from tests.support.s3 import free_port, start_moto, start_server

    if kind == "moto":
        return start_moto()
    port = free_port()
    root.mkdir(parents=True)
    os.environ["LNQ_BENCH_S3_ROOT"] = str(root)
    return start_server(module_command("bench._static_s3", str(root), str(port)), port, env=child_env())


def effective_beam_modes() -> dict[str, str]:
    """What Beam's local runner is told for each mode, per ``beam_jobs.launch.pipeline_options``,
    plus the clash of ``--workers 2`` with an explicit multi_threading mode."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from beam_jobs.launch import pipeline_options

    cases = {
        name: (int(extra[1]), []) if extra[0] == "--workers" else (1, extra) for name, extra in MODES.items()
    }
    cases["--workers 2 + multi_threading x2"] = (2, MODES["multi_threading x2"])
    modes = {}
    for name, (workers, beam_args) in cases.items():
        options = pipeline_options(beam_args, workers=workers)
        direct = options.view_as(DirectOptions)
        runner = options.view_as(StandardOptions).runner
        modes[name] = f"{runner}, {direct.direct_running_mode}, {direct.direct_num_workers} worker(s)"
    return modes


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    from pipeline.demo.cohort import write_cohort  # pyarrow: only once the bench runs

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=10, help="series in the scaling runs (default 10)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each local mode (default 2)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 556-slice memory run")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--json-out", help="also write the raw measurements here")
    parser.add_argument(
        "--s3",
        choices=["moto", "static"],
        default="moto",
        help="the S3 stand-in: moto, as the issue measured (default), or bench/_static_s3.py",
    )
    args = parser.parse_args()

    report: dict = {"load_before": load(), "beam_modes": effective_beam_modes()}
    help_s = {
        "lnq --help": [wall(lnq_command("--help")) for _ in range(5)],
        "lnq run --help": [wall(lnq_command("run", "--help")) for _ in range(5)],
    }
    runs: dict[str, list[LnqRun]] = {name: [] for name in args.modes}
    with tempfile.TemporaryDirectory(prefix="lnq-bench-local-") as tmp:
        work = Path(tmp)
        server, endpoint = start_s3(args.s3, work / "s3")
        os.environ["LNQ_BENCH_S3"] = endpoint
        try:
            start = time.perf_counter()
            rows = [distinct_series(work, MEDIAN_SLICES, i) for i in range(args.series)]
            print(f"{args.series} phantoms written and uploaded in {time.perf_counter() - start:.0f} s")
            cohort = write_cohort(work / "cohort.parquet", rows)
            one = write_cohort(work / "one.parquet", rows[:1])
            bare_s = bare_minimum(rows, endpoint, work) + bare_minimum(rows, endpoint, work)
            print(f"bare minimum: median {median(bare_s):.2f} s per series (load {load()})")
            startup = [
                run_lnq("one series", one, endpoint=endpoint, output=work / f"one{r}", extra=[])
                for r in range(args.repeats + 1)
            ]
            for r in range(args.repeats):
                for name in args.modes:
                    run = run_lnq(
                        name,
                        cohort,
                        endpoint=endpoint,
                        output=work / f"o{r}",
                        extra=MODES[name],
                        server_pid=server.pid,
                    )
                    runs[name].append(run)
                    print(f"{name}: {run.wall_s:.1f} s for {run.n_series} series (load {load()})")
            memory = None
            if not args.skip_memory:
                big = write_cohort(work / "big.parquet", [distinct_series(work, LARGEST_SLICES, 0)])
                memory = run_lnq(
                    "556 slices", big, endpoint=endpoint, output=work / "big", extra=[], sample_memory=True
                )
        finally:
            server.terminate()
    report["load_after"] = load()
    report_and_print(report, bare_s, startup, runs, help_s, memory, args)


def report_and_print(
    report: dict,
    bare_s: list[float],
    startup: list[LnqRun],
    runs: dict[str, list[LnqRun]],
    help_s: dict[str, list[float]],
    memory: LnqRun | None,
    args: argparse.Namespace,
) -> None:
    import torch

    walls = {name: median([r.wall_s for r in rs]) for name, rs in runs.items()}
    one_wall = walls.get("--workers 1")
    bare = median(bare_s)
    serial = runs.get("--workers 1", [])
    inside = median([t for r in serial for t in r.series_total_s])
    gaps = median([g for r in serial for g in r.gaps_s])
    # the first one-series run warms the page cache and the fork server: left out
    startups = [r.wall_s - r.series_total_s[0] for r in startup[1:]]
    report.update(
        machine=machine(),
        torch=torch.__version__,
        bare_minimum_s=bare_s,
        startup_runs=[asdict(r) for r in startup],
        runs={name: [asdict(r) for r in rs] for name, rs in runs.items()},
        help_s=help_s,
        memory=asdict(memory) if memory else None,
    )
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))

    print(f"\nS3 stand-in: {args.s3}")
    print(
        f"\nMachine: {os.cpu_count()} CPUs, load average {report['load_before']} before, "
        f"{report['load_after']} after"
    )
    print("\nBeam options each local mode gets (beam_jobs.launch.pipeline_options):")
    for name, mode in report["beam_modes"].items():
        print(f"- {name}: {mode}")
    print(
        f"\n| mode ({args.series} series, {args.repeats} runs) | wall s (median) | runs | speed-up "
        "| first line s | CPU s per series | machine busy CPU s per run | S3 stand-in CPU s per series |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        speedup = f"{one_wall / walls[name]:.2f}x" if one_wall else "-"
        first = median([r.first_progress_s for r in rs if r.first_progress_s is not None])
        listed = ", ".join(f"{r.wall_s:.1f}" for r in rs)
        cpu = median([r.cpu_s / r.n_series for r in rs])
        busy = median([r.machine_busy_s for r in rs])
        server = median([r.server_cpu_s / r.n_series for r in rs])
        print(
            f"| {name} | {walls[name]:.1f} | {listed} | {speedup} | {first:.1f} | {cpu:.2f} | {busy:.1f} "
            f"| {server:.3f} |"
        )

    stage_names = sorted({k for rs in runs.values() for r in rs for st in r.stages_s for k in st})
    print("\nMedian seconds per series and stage, from the series table:\n")
    print("| mode | " + " | ".join(stage_names) + " | total_s |")
    print("|---|" + "---|" * (len(stage_names) + 1))
    for name, rs in runs.items():
        cells = [median([st[k] for r in rs for st in r.stages_s if k in st]) for k in stage_names]
        cells.append(median([t for r in rs for t in r.series_total_s]))
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")

    rows = [
        (
            "`--workers 2` speed-up over `--workers 1`",
            f"{one_wall / walls['--workers 2']:.2f}x" if one_wall and "--workers 2" in walls else "-",
            f">= {GOALS['speedup']}x",
        ),
    ]
    if serial:
        # what the cores allow at best: a run cannot end before the whole machine's busy CPU
        # seconds of a --workers 1 run (lnq, its children, s5cmd and the S3 server) are spread
        # over all cores (an upper bound: the start-up's serial part is not counted against it)
        busy = median([r.machine_busy_s for r in serial])
        cores = os.cpu_count() or 1
        rows.append(
            (
                f"speed-up {cores} cores allow at most (`--workers 1` wall / (machine busy CPU s / {cores}))",
                f"{one_wall / (busy / cores):.2f}x ({busy:.1f} CPU s busy in a {one_wall:.1f} s run)",
                "-",
            )
        )
    for name in ("multi_threading x2", "multi_processing x2"):
        if one_wall and name in walls:
            rows.append((f"{name} speed-up over `--workers 1`", f"{one_wall / walls[name]:.2f}x", "(option)"))
    rows += [
        ("bare minimum per series (s5cmd CT+SEG, SimpleITK read)", f"{bare:.2f} s", "-"),
        (
            "inside the job per series (`total_s`, `--workers 1`)",
            f"{inside:.2f} s ({inside / bare:.2f}x bare)",
            f"<= {GOALS['inside_ratio']}x bare ({GOALS['inside_ratio'] * bare:.2f} s)",
        ),
        (
            "gap between progress lines (`--workers 1`)",
            f"{gaps:.2f} s ({gaps / bare:.2f}x bare)",
            f"<= {GOALS['inside_ratio']}x bare",
        ),
        (
            "start-up (one-series wall minus its `total_s`)",
            f"{median(startups):.1f} s ({', '.join(f'{s:.1f}' for s in startups)})",
            f"<= {GOALS['startup_s']:.0f} s",
        ),
    ]
    for name, values in help_s.items():
        rows.append((f"`{name}` (median of 5)", f"{median(values):.2f} s", f"< {GOALS['help_s']:.0f} s"))
    if memory:
        peak = memory.peak
        rows += [
            (
                "peak RSS, lnq process tree, 556 slices (sum)",
                f"{peak['rss_sum_bytes'] / GIB:.2f} GiB",
                f"<= {GOALS['peak_bytes'] / GIB:.0f} GiB",
            ),
            (
                "peak PSS, same tree (shared pages counted once)",
                f"{peak['pss_sum_bytes'] / GIB:.2f} GiB",
                "-",
            ),
            (
                "largest single process",
                f"{peak['single_rss_bytes'] / GIB:.2f} GiB (`{peak['single_command'][:60]}`)",
                "-",
            ),
            (
                "556-slice run: wall / `total_s`",
                f"{memory.wall_s:.1f} s / {memory.series_total_s[0]:.1f} s; {peak['samples']} samples, "
                f"one per {1000 * memory.wall_s / max(peak['samples'], 1):.0f} ms",
                "-",
            ),
        ]
    print("\n| figure | measured | goal |")
    print("|---|---|---|")
    for figure, measured, goal in rows:
        print(f"| {figure} | {measured} | {goal} |")


if __name__ == "__main__":
    main()

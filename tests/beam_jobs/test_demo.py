"""``lnq demo``: the whole job offline on phantoms, and a report ``lnq report`` rebuilds exactly."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from beam_jobs.publish import read_table
from tests.support.cli import LNQ


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("demo") / "out"
    done = subprocess.run([*LNQ, "demo", "--output", str(out)], capture_output=True, text=True, timeout=600)
    return out, done


@pytest.mark.slow
def test_demo_runs_the_whole_job_and_names_the_report(demo) -> None:  # type: ignore[no-untyped-def]
    out, done = demo
    assert done.returncode == 0, done.stderr[-3000:]  # the one bad series is broken on purpose
    (line,) = done.stdout.strip().splitlines()
    match = re.fullmatch(
        r"demo: 4 ok, 1 failed of 5 series \(1 broken on purpose: see errors/\); "
        r"(\d+) reference and (\d+) prediction nodes; tables in (\S+); open the report: (\S+)",
        line,
    )
    assert match, line
    assert Path(match.group(4)) == out / "report" / "index.html" and Path(match.group(4)).is_file()
    assert "UserWarning" not in done.stderr and "Traceback" not in done.stderr  # the names warn in highdicom

    series = read_table(str(out), "series").to_pylist()
    errors = read_table(str(out), "errors").to_pylist()
    nodes = read_table(str(out), "nodes").to_pylist()
    assert Counter(r["status"] for r in series) == {"ok": 4, "error": 1}
    assert [(e["stage"], e["error_type"]) for e in errors] == [("decode", "DecodeError")]
    assert "slice spacing not uniform" in errors[0]["message"]
    by_annotation = Counter(r["annotation"] for r in series if r["status"] == "ok")
    assert by_annotation == {"full": 3, "partial": 1}
    for r in series:
        if r["status"] == "ok":
            assert (r["false_positive_nodes"] is None) == (r["annotation"] == "partial")
            assert r["detection_iou_threshold"] == 0.1
            assert (out / "seg" / f"{r['ct_series_instance_uid']}.dcm").is_file()
            assert (out / "qc" / f"{r['ct_series_instance_uid']}.png").is_file()
    by_source = Counter(n["source"] for n in nodes)
    assert (int(match.group(1)), int(match.group(2))) == (by_source["reference"], by_source["prediction"])
    flags = Counter((n["source"], n["quality_flag"]) for n in nodes)
    assert flags[("prediction", "implausible")] >= 1  # the HU window takes the chest wall too
    assert set(flags) <= {(s, f) for s in ("reference", "prediction") for f in ("ok", "speck", "implausible")}
    assert flags[("reference", "ok")] == by_source["reference"]


@pytest.mark.slow
def test_report_rebuilds_exactly_with_the_runs_facts(demo) -> None:  # type: ignore[no-untyped-def]
    """`lnq report` lost the run's wall time and series per hour."""
    out, done = demo
    assert done.returncode == 0, done.stderr[-3000:]
    index = out / "report" / "index.html"
    first = index.read_bytes()
    html = first.decode()
    wall = re.search(r'<div class="value">([^<]*)</div><div class="label">wall time</div>', html)
    rate = re.search(
        r'<div class="value">([^<]*)</div>\s*<div class="label">series per hour \(wall time\)', html
    )
    assert wall and wall.group(1) != "–" and rate and rate.group(1) != "–", html[:3000]
    index.unlink()
    again = subprocess.run(
        [*LNQ, "report", "--output", str(out)], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip() == str(index)
    assert index.read_bytes() == first

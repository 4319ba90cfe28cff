"""Library warnings (highdicom's person-name warning) go to the log at DEBUG, in the ``lnq``
process and in each series' isolated child: never between the progress lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from beam_jobs.cli import configure_logging
configure_logging(sys.argv[1])
from highdicom.valuerep import check_person_name
check_person_name("case_0001")  # in this process
if sys.argv[2] == "child":
    from pipeline.enums import Stage
    from pipeline.isolation import Limits, run_isolated
    from tests.support.isolated_targets import warns_like_highdicom
    print(run_isolated(warns_like_highdicom, series_uid="1.2.3", limits=Limits(), first_stage=Stage.FETCH))
"""


def _run(level: str, where: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, level, where],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.parametrize("where", ["parent", pytest.param("child", marks=pytest.mark.slow)])
def test_library_warnings_are_debug_log_lines(where: str) -> None:
    quiet = _run("INFO", where)
    assert "UserWarning" not in quiet.stderr and "case_000" not in quiet.stderr
    loud = _run("DEBUG", where)
    lines = [line for line in loud.stderr.splitlines() if "UserWarning" in line]
    expected = {"case_0001"} | ({"case_0002"} if where == "child" else set())
    assert {name for name in ("case_0001", "case_0002") if any(name in line for line in lines)} == expected
    assert all(" DEBUG py.warnings: " in line for line in lines)
    if where == "child":
        assert quiet.stdout.strip() == loud.stdout.strip() == "written"

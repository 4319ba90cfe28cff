"""`write_report_for_output` on a run's folder, opened in a real headless browser: every image loads,
the failures are listed, the QC links resolve, the console stays clean."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_jobs.report import write_report_for_output
from tests.pipeline.report.synthetic import phantom_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
SCREENSHOT = os.environ.get("LNQ_REPORT_SCREENSHOT")  # set to keep the screenshot (not docs/, from lnq demo)


class _Tables(HTMLParser):
    """Cell texts of each table by id, and the hrefs of the series table's links."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.hrefs: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or ""
            self.rows[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.rows[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "a" and self._table == "series" and a.get("href"):
            self.hrefs.append(str(a["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.rows[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("run")
    phantom_run(output, n_ok=3, n_failed=3)
    return output


@pytest.mark.slow
@needs_chromium
def test_report_in_a_headless_browser(run_dir: Path, tmp_path: Path) -> None:
    index = Path(
        write_report_for_output(str(run_dir), {"wall_s": 42.0, "started_at": "2025-01-01T12:00:00Z"})
    )
    assert index == run_dir / "report" / "index.html"
    url = index.as_uri()
    dom = _chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert 'data-broken-images="0"' in dom.stdout, "the page's load check did not run or found broken images"
    assert _console_lines(dom.stderr) == []

    tables = _Tables()
    tables.feed(dom.stdout)
    failures = tables.rows["failures"][1:]
    assert {(r[0], r[2], r[3]) for r in failures} == {
        (e["ct_series_instance_uid"], e["stage"], e["error_type"])
        for e in pq.read_table(run_dir / "errors").to_pylist()
    }
    assert "not this CT <script>" in " ".join(r[4] for r in failures)  # shown as text, not run
    counts = {r[0]: int(r[1]) for r in tables.rows["failure-counts"][1:]}
    assert counts == {"fetch": 1, "decode": 1, "reference": 1}
    qc = sorted((run_dir / "qc").glob("*.png"))
    assert len(tables.hrefs) == len(qc) == 3
    for href in tables.hrefs:
        assert (index.parent / href).resolve().is_file(), href
    assert len(tables.rows["series"]) == 1 + 6

    shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,2400", url, profile=tmp_path / "profile")
    assert shot.stat().st_size > 50_000


@pytest.mark.slow
@needs_chromium
def test_a_missing_image_is_seen(run_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "copy"
    write_report_for_output(str(run_dir))
    shutil.copytree(run_dir / "report", report / "report")
    (report / "report" / "plots" / "dsc.png").unlink()
    dom = _chromium("--dump-dom", (report / "report" / "index.html").as_uri(), profile=tmp_path / "profile")
    assert 'data-broken-images="1"' in dom.stdout
    assert re.search(r"1 image\(s\) failed to load", dom.stdout)


@needs_chromium
def test_console_errors_are_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text('<html><body><script>console.error("boom"); missingFunction();</script></body></html>')
    lines = _console_lines(_chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stderr)
    assert len(lines) == 2 and "missingFunction" in lines[1]

"""The report page: self-contained, escaped, every plot it names is written, model plots in model mode."""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

from pipeline.report import build_report, write_report
from tests.pipeline.report.synthetic import random_tables

MODEL_PLOTS = {"dsc.png", "assd.png", "dsc_vs_volume.png", "detection.png", "false_positives.png"}


def test_page_is_self_contained_escaped_and_names_only_written_files() -> None:
    series, nodes, errors = random_tables(30, model="torchscript:m.pt", failed_every=3)
    files = build_report(series, nodes, errors, run_info={"wall_s": 60.0})
    html = files["index.html"].decode()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "no network resources"
    assert "<script>" not in html.replace('<script>\n"use strict"', "")  # only our own inline script
    assert "not this CT &lt;script&gt;" in html  # an error message is text, not markup
    sources = set(re.findall(r'<img src="([^"]+)"', html))
    assert sources == {p for p in files if p.endswith(".png")}
    assert {p.split("/")[-1] for p in sources} >= MODEL_PLOTS
    for path in sources:
        assert Image.open(io.BytesIO(files[path])).format == "PNG"
    # volume bias stands next to sensitivity, with its sign
    facts = re.findall(
        r'<div class="fact"[^>]*><div class="value">([^<]*)</div>\s*<div class="label">([^<]*)', html
    )
    labels = [label for _, label in facts]
    at = next(i for i, label in enumerate(labels) if label.startswith("sensitivity"))
    assert labels[at + 1].startswith("volume bias") and re.fullmatch(r"[+-][\d,]+\.\d\d mL", facts[at + 1][0])
    assert "IoU &ge; 0.1" in labels[at]


def test_reference_mode_has_no_model_plots_and_the_same_bytes_twice() -> None:
    series, nodes, errors = random_tables(12)
    files = build_report(series, nodes, errors)
    assert not {p.split("/")[-1] for p in files} & MODEL_PLOTS
    assert "Model against the expert" not in files["index.html"].decode()
    assert files == build_report(series, nodes, errors)


def test_write_report_writes_next_to_its_images(tmp_path: Path) -> None:
    series, nodes, errors = random_tables(8)
    index = write_report(tmp_path / "report", series, nodes, errors)
    assert index == tmp_path / "report" / "index.html"
    for src in re.findall(r'<img src="([^"]+)"', index.read_text()):
        assert (index.parent / src).is_file()

"""Our SEG and SR as a radiologist sees them: OHIF v3 (the viewer IDC's portal uses), for real.

One ``lnq run`` on a phantom (a HU-window TorchScript model), its CT, SEG and SR stored in a
throwaway Orthanc (DICOMweb), the prebuilt OHIF served beside it on one origin, and headless
chromium driven through the DevTools protocol as a user would click: the study list, the CT,
the SEG's segments, the SR's axes. Screenshots of every step land in the test's folder
(``<basetemp>/test_ohif_shows.../``). Needs ``make viewer-tools``; a missing part fails the
test with what to install, it does not skip it. Left out by ``make test-fast``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image

from pipeline.dicom.seg_writer import segment_tracking
from tests.support import cdp, ohif, orthanc
from tests.support import ohif_page as page
from tests.support.cli import LNQ
from tests.support.cohort import cohort_row, write_cohort
from tests.support.phantoms import Phantom, make_phantom

LENGTH_TOLERANCE_MM = 0.005
"""OHIF prints lengths with 2 decimals; a drawn line must measure the same to that precision."""
POSITION_TOLERANCE_MM = 0.001
"""OHIF's end points against the nodes table's: float32 image coordinates, far below a pixel (the
DICOM half-pixel convention wrong would be 0.8 mm off on the phantom's 1.6 mm pixels)."""


@dataclass
class Run:
    phantom: Phantom
    seg_path: Path
    sr_path: Path
    nodes: list[dict]


def missing_tools() -> str | None:
    """What the viewer test lacks, as the one message it fails with; None when all is there."""
    missing = orthanc.missing() + ohif.missing() + cdp.missing()
    if not missing:
        return None
    return "the viewer test needs (run `make viewer-tools`):\n  " + "\n  ".join(missing)


@pytest.fixture(scope="module")
def tools_installed() -> None:
    message = missing_tools()
    if message is not None:
        pytest.fail(message, pytrace=False)  # a failure, not a skip: `make test` installs them


def test_a_missing_part_fails_the_viewer_test_naming_how_to_install_it(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ohif, "OHIF_DIST", tmp_path / "ohif" / "dist")
    monkeypatch.setattr(orthanc, "ORTHANC", tmp_path / "Orthanc")
    monkeypatch.setattr(cdp, "chromium_path", lambda: None)
    message = missing_tools()
    assert message is not None and message.startswith("the viewer test needs (run `make viewer-tools`)")
    assert f"{tmp_path / 'ohif' / 'dist'} (make viewer-tools (npm pack @ohif/app@3.13.2" in message
    assert f"{tmp_path / 'Orthanc'} (make viewer-tools (Debian packages orthanc" in message
    assert "chromium (make viewer-tools (Debian package chromium" in message


def test_make_view_finds_the_dicom_files_and_says_when_there_are_none(
    monkeypatch, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    from tests.support import view

    (tmp_path / "run" / "seg").mkdir(parents=True)
    (tmp_path / "run" / "seg" / "a.dcm").write_bytes(b"")
    (tmp_path / "ct" / "study" / "series").mkdir(parents=True)
    (tmp_path / "ct" / "study" / "series" / "b.dcm").write_bytes(b"")
    (tmp_path / "ct" / "notes.txt").write_text("")
    found = view.dicom_files([tmp_path / "run" / "seg", tmp_path / "ct"])
    assert [p.name for p in found] == ["a.dcm", "b.dcm"]
    monkeypatch.setattr(orthanc, "missing", lambda: [])
    monkeypatch.setattr(ohif, "missing", lambda: [])
    assert view.main([str(tmp_path / "ct"), str(tmp_path / "nowhere")]) == 2
    assert f"not found: {tmp_path / 'nowhere'}" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert view.main([str(tmp_path / "empty")]) == 2
    assert f"no .dcm file under {tmp_path / 'empty'}" in capsys.readouterr().err


def test_the_makefile_installs_the_ohif_release_the_test_looks_for() -> None:
    makefile = (ohif.REPO / "Makefile").read_text()
    assert f"OHIF_VERSION ?= {ohif.OHIF_VERSION}\n" in makefile
    assert ohif.OHIF_DIST == ohif.REPO / ".tools" / f"ohif-app-{ohif.OHIF_VERSION}" / "dist"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, upload_series, s3_endpoint: str) -> Run:  # type: ignore[no-untyped-def]
    """``lnq run`` with a HU-window model on a clean phantom: three nodes (target, non-target, normal)."""
    from tests.support.models import HuWindow, save_torchscript

    base = tmp_path_factory.mktemp("viewer-run")
    phantom = make_phantom(base / "phantom", patient_id="viewer_001", seed=7, noise_sd=0.0, anatomy=False)
    row = cohort_row(phantom, ct_url=upload_series(phantom.ct_dir), seg_url=upload_series(phantom.seg_path))
    write_cohort(base / "cohort.parquet", [row])
    model = save_torchscript(
        HuWindow(40.0, 70.0),
        base / "window.pt",
        name="window",
        version="7",
        spacing_mm=[2.5, 1.5, 1.5],
        patch_size=(8, 48, 48),
    )
    command = [*LNQ, "run", "--cohort", str(base / "cohort.parquet")]
    command += [
        "--output",
        str(base / "out"),
        "--s3-endpoint",
        s3_endpoint,
        "--model",
        f"torchscript:{model}",
    ]
    done = subprocess.run(
        [*command, "--device", "cpu"], cwd=base, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    series = pq.read_table(base / "out" / "series").to_pylist()[0]
    nodes = [n for n in pq.read_table(base / "out" / "nodes").to_pylist() if n["source"] == "prediction"]
    return Run(
        phantom, Path(series["seg_uri"]), Path(series["sr_uri"]), sorted(nodes, key=lambda n: n["node_index"])
    )


@pytest.fixture()
def viewer(
    tools_installed: None, run: Run, tmp_path: Path
) -> Iterator[tuple[cdp.Browser, ohif.ViewerServer]]:
    """Orthanc holding the run's CT, SEG and SR, OHIF in front of it, chromium on the page; all
    stopped afterwards, whatever happened."""
    with contextlib.ExitStack() as stack:
        server = orthanc.start_orthanc(tmp_path / "orthanc")
        stack.callback(server.stop)
        for path in [*sorted(run.phantom.ct_dir.glob("*.dcm")), run.seg_path, run.sr_path]:
            server.upload(path)
        site = ohif.serve_viewer(server.url)
        stack.callback(site.stop)
        browser = cdp.Browser.launch(tmp_path / "chromium", width=1600, height=900)
        stack.callback(browser.close)
        stack.callback(_save_console, browser, tmp_path / "console.txt")
        yield browser, site


def _save_console(browser: cdp.Browser, path: Path) -> None:
    path.write_text("".join(f"{e.level}\t{e.source}\t{e.text}\n" for e in browser.console))


@pytest.mark.viewer
@pytest.mark.slow
def test_ohif_shows_the_study_ct_seg_and_sr_axes(viewer, run: Run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    b, site = viewer
    seg, sr = pydicom.dcmread(run.seg_path), pydicom.dcmread(run.sr_path)
    tracking = segment_tracking(seg)
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    assert len(run.nodes) == len(tracking) == 3
    assert [n["tracking_uid"] for n in run.nodes] == [tracking[n["node_index"]].uid for n in run.nodes]

    # 1. the study list
    b.goto(site.url + "/")
    b.wait_for(
        f"document.body && document.body.innerText.includes({run.phantom.patient_id!r})"
        " && document.body.innerText.includes('CT\\\\SEG\\\\SR')",
        what="the study (CT, SEG, SR) in OHIF's study list",
        timeout_s=90,
    )
    b.screenshot(tmp_path / "01-study-list.png")

    # 2. the CT: 40 slices, node 1's slice drawn with the default CT window (W 400, L 40)
    b.goto(f"{site.url}/viewer?StudyInstanceUIDs={run.phantom.study_uid}")
    n_slices = run.phantom.hu.shape[0]
    page.wait_for_stack(b, "default", n_slices)
    first = run.nodes[0]
    page.show_slice_at(b, "default", first["measurement_slice_z_mm"])
    centre = (first["centroid_x_mm"], first["centroid_y_mm"], first["measurement_slice_z_mm"])
    shot = b.screenshot(tmp_path / "02-ct.png")
    node_grey, fat_grey = _pixel(shot, b, centre), _pixel(shot, b, (centre[0], centre[1] + 40.0, centre[2]))
    # 40 HU (node) -> 50 % grey, -100 HU (fat) -> 15 % grey through W 400 / L 40
    assert abs(np.mean(node_grey) - 0.50 * 255) < 20 and abs(np.mean(fat_grey) - 0.15 * 255) < 20, (
        node_grey,
        fat_grey,
    )

    # 3. the SEG: opened from its thumbnail, its segments listed with their labels, node 1 coloured
    page.open_series(b, int(seg.SeriesNumber))
    page.click_button(b, "Yes")  # "Do you want to open this Segmentation?"
    b.wait_for(
        "services.segmentationService.getSegmentations().length > 0", what="the SEG loaded", timeout_s=60
    )
    b.click_selector('[data-cy="panelSegmentation-btn"]', what="the segmentation panel button")
    b.wait_for(page.all_listed(labels), what=f"segment labels {labels} in the segmentation panel")
    loaded = b.evaluate(
        "services.segmentationService.getSegmentations().flatMap(s => Object.values(s.segments)"
        ".filter(Boolean).map(x => x.label))"
    )
    assert loaded == labels == [f"Lymph node {i}" for i in (1, 2, 3)]
    page.show_slice_at(b, "default", first["measurement_slice_z_mm"])
    shot = b.screenshot(tmp_path / "03-seg.png")
    red, green, blue = _pixel(shot, b, centre)
    assert max(red, green, blue) - min(red, green, blue) > 40, (red, green, blue)  # a colour, not CT grey

    # 4. the SR: both axes of every node drawn on the node's slice, lengths as in the nodes table
    page.open_series(b, int(sr.SeriesNumber))
    b.wait_for(
        "services.displaySetService.getActiveDisplaySets().some(d => d.Modality === 'SR' && d.isLoaded"
        " && d.measurements && d.measurements.length && d.measurements.every(m => m.loaded))",
        what="the SR's measurements placed on CT images",
        timeout_s=60,
    )
    page.wait_for_stack(b, "default", n_slices)
    measurements = {m.tracking_identifier: m for m in page.sr_measurements(b)}
    for i, node in enumerate(run.nodes):
        name = tracking[node["node_index"]].identifier
        assert measurements[name].tracking_uid == node["tracking_uid"]
        assert measurements[name].graphic == measurements[f"{name} short axis"].graphic == ["SCOORD POLYLINE"]
        for _ in range(2 * len(run.nodes)):  # the viewport's arrows step through the measurements
            if abs(page.current_z_mm(b, "default") - node["measurement_slice_z_mm"]) < 0.01:
                break
            b.click_selector(
                '[data-cy="viewport-action-arrows-right"]', what="the SR's next-measurement arrow"
            )
            b.idle(1.0)  # OHIF remounts the viewport when the next measurement is on another image
            page.wait_for_stack(b, "default", n_slices)
        assert page.current_z_mm(b, "default") == pytest.approx(node["measurement_slice_z_mm"], abs=0.01), (
            name
        )
        page.zoom_on(b, "default", _right_of(node), 3.0)  # the node and its text box, large
        b.screenshot(tmp_path / f"{4 + i:02d}-sr-{name.replace(' ', '-').lower()}.png")
        long_lines = page.drawn_lines(b, "default", node["tracking_uid"])
        short_lines = page.drawn_lines(b, "default", measurements[f"{name} short axis"].tracking_uid)
        assert len(long_lines) == len(short_lines) == 1, (long_lines, short_lines)
        assert long_lines[0]["length_mm"] == pytest.approx(node["long_axis_mm"], abs=LENGTH_TOLERANCE_MM)
        assert short_lines[0]["length_mm"] == pytest.approx(node["short_axis_mm"], abs=LENGTH_TOLERANCE_MM)
        for axis, line in (("long", long_lines[0]), ("short", short_lines[0])):  # where, not only how long
            ends = [[node[f"{axis}_axis_{end}_{c}_mm"] for c in "xyz"] for end in ("start", "end")]
            np.testing.assert_allclose(line["points_mm"], ends, rtol=0, atol=POSITION_TOLERANCE_MM)
        shown = dict(_label(line) for line in page.text_box(b, node["tracking_uid"]))
        assert shown == {
            "Volume": f"{node['volume_ml']:.2f} mL",
            "L": f"{node['long_axis_mm']:.2f} mm",
            "W": f"{node['short_axis_mm']:.2f} mm",
            "Diameter": f"{node['max_diameter_3d_mm']:.2f} mm",
            "Attenuation Coefficient": f"{node['mean_hu']:.2f} [hnsf'U]",
        }, name
        assert (
            page.text_box(b, measurements[f"{name} short axis"].tracking_uid) == []
        )  # nothing over the values

    # 5. SEG and SR side by side on node 1's slice: the picture in docs/viewing.md
    _seg_beside_sr(b, int(seg.SeriesNumber), int(sr.SeriesNumber), centre, n_slices)
    b.screenshot(tmp_path / "07-seg-and-sr.png")

    errors = b.errors()
    assert errors == [], "\n".join(f"{e.source}: {e.text}" for e in errors)


def _seg_beside_sr(
    b: cdp.Browser, seg_series: int, sr_series: int, centre: tuple[float, float, float], n_slices: int
) -> None:
    """Two viewports: the CT with the SEG on the left, the SR on the right, both on node 1, magnified."""
    b.evaluate("commandsManager.runCommand('setViewportGridLayout', { numRows: 1, numCols: 2 })")
    b.wait_for("services.viewportGridService.getState().viewports.size === 2", what="two viewports")
    left, right = b.evaluate("[...services.viewportGridService.getState().viewports.keys()]")
    b.click_selector(f'[data-viewportid="{left}"]', what="the left viewport")
    page.open_series(b, seg_series)
    page.click_button(b, "Yes")
    page.wait_for_stack(b, left, n_slices)
    b.click_selector(f'[data-viewportid="{right}"]', what="the right viewport")
    page.open_series(b, sr_series)
    b.wait_for(
        f"!!({page.viewport(right)})"
        f" && !!document.querySelector('[data-viewportid=\"{right}\"] g[data-annotation-uid]')",
        what="the SR drawn on the right",
        timeout_s=60,
    )
    page.show_slice_at(b, left, centre[2])
    for viewport_id in (left, right):
        page.zoom_on(b, viewport_id, (centre[0] + 22.0, centre[1] + 8.0, centre[2]), 2.0)
    b.idle(1.0)


def _right_of(node: dict) -> tuple[float, float, float]:
    """A point beside the node towards its text box (patient left, posterior): a view centred
    there shows both."""
    return node["centroid_x_mm"] + 12.0, node["centroid_y_mm"] + 6.0, node["measurement_slice_z_mm"]


def _label(line: str) -> tuple[str, str]:
    """'L: : 21.56 mm' (OHIF's short form for Long Axis) -> ('L', '21.56 mm')."""
    name, _, value = line.partition(":")
    return name.strip(), value.lstrip(" :")


def _pixel(shot: Path, b: cdp.Browser, world: tuple[float, float, float]) -> tuple[int, int, int]:
    """The screenshot's RGB at a patient point (mean of 3 x 3 pixels) in the default viewport."""
    x, y = page.page_point(b, "default", world)
    with Image.open(shot) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=float)
    patch = rgb[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2]
    red, green, blue = (int(round(v)) for v in patch.reshape(-1, 3).mean(axis=0))
    return red, green, blue

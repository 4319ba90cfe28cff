"""The demo's inputs: a few LNQ-like phantom series, the cohort that names them, and a model.

Written into one folder::

    FOLDER/series/case_000N/ct/*.dcm    a CT series, one file per slice (shuffled names)
    FOLDER/series/case_000N/seg/seg.dcm  its expert-style SEG (dcmqi style: one segment, BINARY)
    FOLDER/cohort.parquet               the cohort, as ``lnq cohort`` writes it
    FOLDER/model/hu_window.pt (+ .json) a TorchScript HU-window model and its sidecar

The series are what LNQ's are like, in small: fully annotated ones (every node marked), a
partially annotated one (only its largest node marked: a partial annotation says nothing of the
others, so no false positives are counted there) and a bad one (a CT slice is missing: decoding
refuses it and it becomes an ``errors`` row while the others go on). Patient names are one
component, as in IDC's LNQ series, which highdicom warns about.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.demo.cohort import cohort_row, write_cohort
from pipeline.demo.model import HuWindow, save_torchscript
from pipeline.demo.phantoms import Ellipsoid, Phantom, ct_datasets, make_phantom, write_seg

SHAPE_ZYX = (40, 128, 128)
PIXEL_MM = (1.6, 1.6)
SLICE_MM = 2.5
MODEL_FILE = "model/hu_window.pt"
N_BAD_SERIES = 1
"""Series the demo breaks on purpose (its run ends with this many failures)."""


@dataclass(frozen=True)
class DemoInputs:
    cohort: Path
    model: Path
    n_series: int
    n_bad: int = N_BAD_SERIES


def _z_centre() -> float:
    return -300.0 + (SHAPE_ZYX[0] - 1) * SLICE_MM / 2.0


def _nodes(case: int) -> list[Ellipsoid]:
    """Nodes in the mediastinal fat: a target (short axis >= 15 mm), non-targets and normal nodes."""
    z = _z_centre()
    sets = [
        [((-4.0, -20.0, z - 18.0), (11.0, 8.0, 9.0)), ((5.0, 10.0, z + 2.0), (7.0, 6.0, 7.5))],
        [((3.0, -15.0, z - 8.0), (9.0, 7.5, 8.0)), ((-5.0, 25.0, z + 20.0), (4.0, 3.5, 4.0))],
        [((0.0, 0.0, z), (12.0, 9.0, 12.0)), ((4.0, -32.0, z - 25.0), (6.0, 5.5, 6.0))],
        [((-3.0, 12.0, z + 10.0), (10.0, 8.5, 9.0)), ((5.0, -22.0, z - 16.0), (5.0, 4.5, 5.0))],
    ]
    return [Ellipsoid(c, a) for c, a in sets[case % len(sets)]]


def write_demo_inputs(folder: str | Path) -> DemoInputs:
    """Write the phantoms, the cohort and the model into ``folder`` (replacing what is there)."""
    base = Path(folder)
    if base.exists():
        shutil.rmtree(base / "series", ignore_errors=True)
    rows = []
    kinds = ("full", "full", "partial", "full", "bad")
    for i, kind in enumerate(kinds):
        patient = f"case_{i + 1:04d}"
        phantom = make_phantom(
            base / "series" / patient,
            patient_id=patient,
            patient_name=patient,
            shape_zyx=SHAPE_ZYX,
            pixel_spacing_mm=PIXEL_MM,
            slice_spacing_mm=SLICE_MM,
            nodes=_nodes(i),
            seed=100 + i,
            annotation="partial" if kind == "partial" else "full",
            write_seg=kind != "partial",
        )
        count = phantom.hu.shape[0]
        if kind == "partial":
            _write_partial_seg(phantom)
        if kind == "bad":
            _drop_a_slice(phantom)
            count -= 1
        rows.append(
            cohort_row(
                phantom, ct_url=str(phantom.ct_dir), seg_url=str(phantom.seg_path), ct_instance_count=count
            )
        )
    cohort = base / "cohort.parquet"
    write_cohort(cohort, rows)
    model = save_torchscript(
        HuWindow(40.0, 70.0),
        base / MODEL_FILE,
        name="hu-window-demo",
        version="1",
        patch_size=(16, 64, 64),
    )
    return DemoInputs(cohort=cohort, model=model, n_series=len(rows))


def _write_partial_seg(phantom: Phantom) -> None:
    """A partial annotation, as most of LNQ's: only the largest node is marked."""
    from scipy import ndimage

    labels, n = ndimage.label(phantom.mask, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == 1 + int(np.argmax(sizes)) if n else phantom.mask
    write_seg(
        ct_datasets(phantom),
        largest,
        phantom.seg_path,
        series_uid=phantom.seg_series_uid,
        series_description="Partially Annotated",
        series_number=1000,
    )


def _drop_a_slice(phantom: Phantom) -> None:
    """Remove the file of the middle slice: the slice spacing is no longer uniform."""
    k = phantom.hu.shape[0] // 2
    (phantom.ct_dir / f"{phantom.sop_instance_uids[k].split('.')[-1]}.dcm").unlink()

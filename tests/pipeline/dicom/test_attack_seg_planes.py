"""Attacks: reference SEGs whose planes are not their CT's. Placed by index, each would land
somewhere other than where it was drawn (a mirror image, another slice, another scale); each is
that series' ``reference`` error, found before anything is placed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.reference_seg import read_reference_seg
from pipeline.errors import ReferenceSegError
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.geometry import CtVolume
from pipeline.outputs.rows import outcome_rows
from pipeline.process import ProcessConfig, process_series
from tests.support.cohort import cohort_row


@pytest.fixture(scope="module")
def ct(phantom) -> CtVolume:
    return decode_ct_series(str(phantom.ct_dir))


def _edited(phantom, tmp_path: Path, edit: Callable[[pydicom.Dataset], None]) -> Path:
    ds = pydicom.dcmread(phantom.seg_path)
    edit(ds)
    path = tmp_path / "edited.dcm"
    ds.save_as(path)
    return path


def _shared(ds: pydicom.Dataset) -> pydicom.Dataset:
    return ds.SharedFunctionalGroupsSequence[0]


def _frame(ds: pydicom.Dataset, index: int) -> pydicom.Dataset:
    return ds.PerFrameFunctionalGroupsSequence[index]


def _mirrored(ds: pydicom.Dataset) -> None:
    """Drawn on a left-right mirrored copy of the CT: row direction reversed, first pixel at the
    other end of the row, pixels flipped. In patient space the SEG is right; by index it is not."""
    columns = int(ds.Columns)
    spacing = float(_shared(ds).PixelMeasuresSequence[0].PixelSpacing[1])
    _shared(ds).PlaneOrientationSequence[0].ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
    for frame in ds.PerFrameFunctionalGroupsSequence:
        x, y, z = (float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient)
        frame.PlanePositionSequence[0].ImagePositionPatient = [x + (columns - 1) * spacing, y, z]
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), columns)
    ds.PixelData = pydicom.pixels.pack_bits(frames[:, :, ::-1].astype(np.uint8))


def _shift(index: int, by: tuple[float, float, float]) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        item = _frame(ds, index).PlanePositionSequence[0]
        item.ImagePositionPatient = [float(v) + d for v, d in zip(item.ImagePositionPatient, by, strict=True)]

    return edit


def _per_frame_orientation(ds: pydicom.Dataset) -> None:
    """One frame (of 16) overrides the shared orientation with a column direction reversed."""
    item = pydicom.Dataset()
    item.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]
    _frame(ds, 7).PlaneOrientationSequence = pydicom.Sequence([item])


def _pixel_spacing(ds: pydicom.Dataset) -> None:
    _shared(ds).PixelMeasuresSequence[0].PixelSpacing = [0.8, 0.8]  # drawn on a grid twice as fine


def _no_orientation(ds: pydicom.Dataset) -> None:
    del _shared(ds).PlaneOrientationSequence


def _no_position(ds: pydicom.Dataset) -> None:
    del _frame(ds, 3).PlanePositionSequence


def _garbled_orientation(ds: pydicom.Dataset) -> None:
    _shared(ds).PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1]


def _non_numeric_position(ds: pydicom.Dataset) -> None:
    _frame(ds, 0).PlanePositionSequence[0].add_new((0x0020, 0x0032), "DS", None)
    _frame(ds, 0).PlanePositionSequence[0]["ImagePositionPatient"]._value = ["a", "b", "c"]


def _rotated(ds: pydicom.Dataset) -> None:
    """Rotated by 0.1 degree in plane: 0.3 mm at the edge of a 204 mm field, well past rounding."""
    c, s = np.cos(np.radians(0.1)), np.sin(np.radians(0.1))
    _shared(ds).PlaneOrientationSequence[0].ImageOrientationPatient = [c, s, 0, -s, c, 0]


ATTACKS = [
    (_mirrored, r"orientation \[-1.0, 0.0, 0.0, 0.0, 1.0, 0.0\] is not the CT's .*row direction reversed"),
    (_per_frame_orientation, r"frame 8 orientation .* column direction reversed"),
    (_rotated, r"frame 1 orientation \[1.0, 0.00175, 0.0, -0.00175, 1.0, 0.0\] is not"),
    (_pixel_spacing, r"pixel spacing \[0.8, 0.8\] mm \(row, column\) is not the CT's \[1.6, 1.6\]"),
    (_shift(5, (0.0, 0.0, 2.5)), r"frame 6 lies at .* 2.500 mm off the plane of the CT slice it references"),
    (_shift(0, (0.0, 0.0, 0.3)), r"frame 1 lies at .* 0.300 mm off the plane"),
    (_shift(9, (3.2, -1.6, 0.0)), r"frame 10 lies at .* 3.578 mm across it"),
    (_shift(2, (0.1, 0.0, 0.0)), r"frame 3 .* 0.100 mm across it"),
    (_no_orientation, r"frame 1 has no ImageOrientationPatient \(in PlaneOrientationSequence\)"),
    (_no_position, r"frame 4 has no ImagePositionPatient"),
    (_garbled_orientation, r"ImageOrientationPatient has 5 value"),
    (_non_numeric_position, r"ImagePositionPatient .* not numeric"),
]


@pytest.mark.parametrize(("edit", "message"), ATTACKS, ids=lambda v: getattr(v, "__name__", None))
def test_a_seg_off_its_ct_planes_is_refused(
    phantom, ct: CtVolume, tmp_path: Path, edit, message: str
) -> None:
    path = _edited(phantom, tmp_path, edit)
    with pytest.raises(ReferenceSegError, match=message) as caught:
        read_reference_seg(str(path), ct)
    assert caught.value.series_uid == ct.series_uid


def _without_sources(edit: Callable[[pydicom.Dataset], None]) -> Callable[[pydicom.Dataset], None]:
    def both(ds: pydicom.Dataset) -> None:
        edit(ds)
        for frame in ds.PerFrameFunctionalGroupsSequence:
            del frame.DerivationImageSequence

    return both


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_mirrored, "row direction reversed"),
        (_shift(4, (0.0, 0.0, 1.25)), r"frame 5 .* 1.250 mm off the plane of the nearest CT slice"),
        (_shift(4, (0.0, 0.0, 250.0)), r"frame 5 .* off the plane of the nearest CT slice \(39\)"),
        (_pixel_spacing, "pixel spacing"),
    ],
)
def test_placed_by_position_the_planes_must_be_the_cts_too(
    phantom, ct: CtVolume, tmp_path: Path, edit, message: str
) -> None:
    """Without source references frames are placed by position: a frame between two slices, or a
    SEG on another grid, would be resampled onto the CT by nearest neighbour, not placed voxel
    for voxel."""
    path = _edited(phantom, tmp_path, _without_sources(edit))
    with pytest.raises(ReferenceSegError, match=message):
        read_reference_seg(str(path), ct)


def _rounded_like_dcmqi(ds: pydicom.Dataset) -> None:
    """Values a writer rounds (dcmqi writes 7 significant digits): still the CT's planes."""
    _shared(ds).PlaneOrientationSequence[0].ImageOrientationPatient = [
        "1.000000e+00",
        "4.000000e-06",
        "0",
        "-4.000000e-06",
        "1.000000e+00",
        "0",
    ]
    for frame in ds.PerFrameFunctionalGroupsSequence:
        item = frame.PlanePositionSequence[0]
        item.ImagePositionPatient = [f"{float(v) + 0.0004:.6e}" for v in item.ImagePositionPatient]


@pytest.mark.parametrize("edit", [_rounded_like_dcmqi, _without_sources(_rounded_like_dcmqi)])
def test_rounding_is_not_a_mismatch(phantom, ct: CtVolume, tmp_path: Path, edit) -> None:
    path = _edited(phantom, tmp_path, edit)
    np.testing.assert_array_equal(read_reference_seg(str(path), ct), phantom.mask)


def test_a_mirrored_seg_is_a_reference_row_not_an_ok_series(phantom, tmp_path: Path) -> None:
    """The attack as it was found: the mask landed on the mirror image (on fat), the series was ok."""
    path = _edited(phantom, tmp_path, _mirrored)
    row = cohort_row(phantom, ct_url=str(phantom.ct_dir), seg_url=str(path))
    config = ProcessConfig(fetch=FetchConfig(endpoint_url="http://127.0.0.1:9", attempts=1))
    rows = outcome_rows(process_series(row, config=config))
    assert rows.series["status"] == "error" and rows.nodes == []
    ((stage, kind, text),) = [(e["stage"], e["error_type"], e["message"]) for e in rows.errors]
    assert (stage, kind) == ("reference", "ReferenceSegError")
    assert phantom.series_uid in text and "mirror image" in text

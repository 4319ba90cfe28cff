"""CT decoding: geometry, sorting, transfer syntaxes, and every rejection."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from pipeline.dicom.ct import decode_ct_series
from pipeline.errors import DecodeError
from tests.support.phantoms import make_phantom


def _copy_ct(phantom, tmp_path: Path) -> Path:
    target = tmp_path / "ct"
    shutil.copytree(phantom.ct_dir, target)
    return target


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def _by_position(folder: Path) -> list[Path]:
    return sorted(_files(folder), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_phantom_decodes_to_written_hu_and_geometry(phantom) -> None:
    ct = decode_ct_series(str(phantom.ct_dir), expected_series_uid=phantom.series_uid)
    np.testing.assert_array_equal(ct.hu, phantom.hu)
    assert ct.geometry.origin_mm == pytest.approx(phantom.origin_mm)
    assert ct.geometry.spacing_mm == pytest.approx(phantom.spacing_mm)
    assert ct.geometry.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert list(ct.sop_instance_uids) == phantom.sop_instance_uids
    assert ct.series_uid == phantom.series_uid
    assert ct.patient_id == phantom.patient_id


def test_slices_sorted_by_position_not_instance_number_or_name(phantom) -> None:
    ct = decode_ct_series(str(phantom.ct_dir))
    numbers = [int(pydicom.dcmread(p).InstanceNumber) for p in _by_position(phantom.ct_dir)]
    assert numbers != sorted(numbers), "the phantom must scramble instance numbers"
    names = [p.name for p in _by_position(phantom.ct_dir)]
    assert names != sorted(names), "the phantom must scramble file names"
    positions = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in ct.source_files]
    assert positions == sorted(positions)


def test_feet_first_reversed_normal_sorts_along_normal(tmp_path: Path) -> None:
    """Orientation flipped (x to patient right): the normal points feet-ward, slices follow it."""
    p = make_phantom(tmp_path / "p", shape_zyx=(6, 16, 16), seed=3, write_seg=False)
    for path in _files(p.ct_dir):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
        ds.save_as(path)
    ct = decode_ct_series(str(p.ct_dir))
    direction = np.asarray(ct.geometry.direction).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 2], [0, 0, -1])
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in ct.source_files]
    assert z == sorted(z, reverse=True)
    reference = _sitk_series(p.ct_dir)
    assert ct.geometry.origin_mm == pytest.approx(reference.GetOrigin())
    np.testing.assert_array_equal(ct.hu, sitk.GetArrayFromImage(reference))


def test_anisotropic_spacing_maps_to_x_y_z(tmp_path: Path) -> None:
    p = make_phantom(
        tmp_path / "p",
        shape_zyx=(5, 12, 20),
        pixel_spacing_mm=(0.7, 1.3),
        slice_spacing_mm=3.0,
        seed=4,
        write_seg=False,
    )
    ct = decode_ct_series(str(p.ct_dir))
    # PixelSpacing is (row spacing, column spacing) = (y, x)
    assert ct.geometry.spacing_mm == pytest.approx((1.3, 0.7, 3.0))
    assert ct.hu.shape == (5, 12, 20)


@pytest.mark.parametrize(
    ("transfer_syntax", "signed"),
    [
        (ExplicitVRLittleEndian, True),
        (ExplicitVRLittleEndian, False),
        (ImplicitVRLittleEndian, True),
        (RLELossless, True),
        (JPEGLSLossless, False),
        (JPEG2000Lossless, True),
        (JPEGLosslessSV1, False),
    ],
)
def test_transfer_syntaxes_and_pixel_representations_decode(
    tmp_path: Path, transfer_syntax: str, signed: bool
) -> None:
    p = make_phantom(
        tmp_path / "p",
        shape_zyx=(4, 32, 32),
        transfer_syntax=transfer_syntax,
        signed=signed,
        seed=5,
        write_seg=False,
    )
    first = pydicom.dcmread(_files(p.ct_dir)[0])
    assert first.file_meta.TransferSyntaxUID == transfer_syntax
    assert int(first.PixelRepresentation) == (1 if signed else 0)
    ct = decode_ct_series(str(p.ct_dir))
    np.testing.assert_array_equal(ct.hu, p.hu)


def test_real_ct_matches_simpleitk_series_reader(real_ct: Path) -> None:
    folders = [
        "lpctdx-A0001-5mm-kernelB",
        "lpctdx-A0002-8mm-B40f",
        "totalseg-example-j2k",
        "dcmqi-ct3slice/ct",
    ]
    for name in folders:
        folder = real_ct / name
        ct = decode_ct_series(str(folder))
        reference = _sitk_series(folder)
        assert ct.geometry.size_zyx == reference.GetSize()[::-1], name
        assert ct.geometry.origin_mm == pytest.approx(reference.GetOrigin(), abs=1e-4), name
        assert ct.geometry.spacing_mm == pytest.approx(reference.GetSpacing(), abs=1e-4), name
        assert ct.geometry.direction == pytest.approx(reference.GetDirection(), abs=1e-6), name
        np.testing.assert_array_equal(ct.hu, sitk.GetArrayFromImage(reference), err_msg=name)


def test_real_ct_overlapping_slices_use_spacing_not_thickness(real_ct: Path) -> None:
    ct = decode_ct_series(str(real_ct / "totalseg-example-j2k"))
    thickness = float(pydicom.dcmread(ct.source_files[0]).SliceThickness)
    assert thickness == pytest.approx(3.0)
    assert ct.geometry.spacing_mm[2] == pytest.approx(2.0)


# ---- rejections -------------------------------------------------------------------------------


def _edit(folder: Path, index: int, **changes: object) -> None:
    path = _by_position(folder)[index]
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


@pytest.fixture()
def small(tmp_path: Path):
    return make_phantom(tmp_path / "small", shape_zyx=(8, 24, 24), seed=6, write_seg=False)


def test_rejects_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="no files"):
        decode_ct_series(str(tmp_path))


def test_rejects_two_series(small) -> None:
    _edit(small.ct_dir, 3, SeriesInstanceUID="1.2.3.4")
    with pytest.raises(DecodeError, match="more than one SeriesInstanceUID"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_unexpected_series(small) -> None:
    with pytest.raises(DecodeError, match="expected '1.2.3'"):
        decode_ct_series(str(small.ct_dir), expected_series_uid="1.2.3")


def test_rejects_two_frames_of_reference(small) -> None:
    _edit(small.ct_dir, 2, FrameOfReferenceUID="1.2.3.4")
    with pytest.raises(DecodeError, match="more than one FrameOfReferenceUID"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_non_ct(small) -> None:
    _edit(small.ct_dir, 0, Modality="MR")
    with pytest.raises(DecodeError, match="is not CT .*Modality 'MR'"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_differing_orientation(small) -> None:
    _edit(small.ct_dir, 4, ImageOrientationPatient=[1, 0, 0, 0, 0.9998, 0.02])
    with pytest.raises(DecodeError, match="orientation differs"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_differing_pixel_spacing(small) -> None:
    _edit(small.ct_dir, 4, PixelSpacing=["1.7", "1.6"])
    with pytest.raises(DecodeError, match="pixel spacing differs"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_differing_matrix(small) -> None:
    path = _by_position(small.ct_dir)[5]
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 12, 48
    ds.save_as(path)
    with pytest.raises(DecodeError, match="image matrix differs"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_duplicate_positions(small) -> None:
    first = pydicom.dcmread(_by_position(small.ct_dir)[1])
    _edit(small.ct_dir, 2, ImagePositionPatient=list(first.ImagePositionPatient))
    with pytest.raises(DecodeError, match="duplicate slice position"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_missing_slice(small) -> None:
    _by_position(small.ct_dir)[4].unlink()
    with pytest.raises(DecodeError, match=r"slice spacing not uniform \(2.500 mm then 5.000 mm"):
        decode_ct_series(str(small.ct_dir))


def test_tolerates_spacing_jitter_below_tolerance(small) -> None:
    ds = pydicom.dcmread(_by_position(small.ct_dir)[4])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    _edit(small.ct_dir, 4, ImagePositionPatient=[x, y, z + 0.01])
    assert decode_ct_series(str(small.ct_dir)).geometry.size_zyx[0] == 8


def test_rejects_gantry_tilt(small) -> None:
    ds = pydicom.dcmread(_by_position(small.ct_dir)[6])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    _edit(small.ct_dir, 6, ImagePositionPatient=[x, y + 1.0, z])
    with pytest.raises(DecodeError, match="shifted .* in plane"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_non_dicom_file(small) -> None:
    (small.ct_dir / "notes.txt").write_text("not an image")
    with pytest.raises(DecodeError, match="notes.txt is not a DICOM file"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_truncated_file(small) -> None:
    path = _by_position(small.ct_dir)[3]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])
    with pytest.raises(DecodeError, match=path.name):
        decode_ct_series(str(small.ct_dir))


def test_rejects_missing_position(small) -> None:
    path = _by_position(small.ct_dir)[3]
    ds = pydicom.dcmread(path)
    del ds.ImagePositionPatient
    ds.save_as(path)
    with pytest.raises(DecodeError, match="has no ImagePositionPatient"):
        decode_ct_series(str(small.ct_dir))

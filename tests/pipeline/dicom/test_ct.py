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


# ---- header claims checked before anything is allocated (issue 9) ---------------------------------


def _edit_all(folder: Path, **changes: object) -> None:
    for index in range(len(_files(folder))):
        _edit(folder, index, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"RescaleSlope": "0"}, "RescaleSlope is 0"),
        (
            {"RescaleIntercept": "1e300"},
            r"RescaleSlope 1 and RescaleIntercept 1e\+300 map stored values .* onto 1e\+300",
        ),
        ({"RescaleSlope": "NaN"}, r"RescaleSlope \[nan\] is not finite"),
        ({"RescaleSlope": "1e-6"}, "RescaleSlope 1e-06 .* a CT rescale covers -1000 to 1000 HU"),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")
def test_rejects_degenerate_rescale_on_one_slice_naming_the_file(
    small, changes: dict[str, object], message: str
) -> None:
    """Slope 0, intercept 1e300 or a NaN slope on one slice gave ok rows with mean_hu 30.7, inf, nan."""
    name = _by_position(small.ct_dir)[3].name
    _edit(small.ct_dir, 3, **changes)
    with pytest.raises(DecodeError, match=f"{name}: {message}"):
        decode_ct_series(str(small.ct_dir))


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")
def test_rejects_nan_position_at_decode(small) -> None:
    """A NaN position made a NaN slice spacing that surfaced at measure."""
    name = _by_position(small.ct_dir)[3].name
    _edit(small.ct_dir, 3, ImagePositionPatient=["NaN", "0", "-292.5"])
    with pytest.raises(
        DecodeError, match=rf"{name}: ImagePositionPatient \[nan, 0.0, -292.5\] is not finite"
    ):
        decode_ct_series(str(small.ct_dir))


@pytest.mark.parametrize(
    ("orientation", "message"),
    [
        ([0, 0, 0, 0, 1, 0], "has a zero-length direction"),
        ([1, 0, 0, 1, 0, 0], "has parallel row and column directions"),
    ],
)
def test_rejects_degenerate_orientation_of_the_whole_series(
    small, orientation: list[int], message: str
) -> None:
    _edit_all(small.ct_dir, ImageOrientationPatient=orientation)
    with pytest.raises(DecodeError, match=message):
        decode_ct_series(str(small.ct_dir))


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")
@pytest.mark.parametrize(
    ("spacing", "message"), [(["NaN", "NaN"], "is not finite"), (["0", "0"], "expected above 0")]
)
def test_rejects_nan_or_zero_pixel_spacing(small, spacing: list[str], message: str) -> None:
    _edit_all(small.ct_dir, PixelSpacing=spacing)
    with pytest.raises(DecodeError, match=f"PixelSpacing .* {message}"):
        decode_ct_series(str(small.ct_dir))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"NumberOfFrames": 2}, "NumberOfFrames 2, a CT Image Storage instance holds one frame"),
        ({"SamplesPerPixel": 3}, "SamplesPerPixel 3, a CT image has 1"),
        ({"BitsAllocated": 32}, "BitsAllocated 32, the CT Image Module requires 16"),
        ({"BitsStored": 17}, "BitsStored 17, expected 1 to BitsAllocated 16"),
        ({"PixelRepresentation": 2}, "PixelRepresentation 2, expected 0"),
    ],
)
def test_rejects_pixel_module_claims(small, changes: dict[str, object], message: str) -> None:
    name = _by_position(small.ct_dir)[5].name
    _edit(small.ct_dir, 5, **changes)
    with pytest.raises(DecodeError, match=f"{name}: {message}"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_matrix_claim_larger_than_the_pixel_data(small) -> None:
    """A slice claiming 65535 x 65535 pixels: the file's 1,152 bytes say otherwise."""
    name = _by_position(small.ct_dir)[2].name
    _edit(small.ct_dir, 2, Rows=65535, Columns=65535)
    with pytest.raises(
        DecodeError, match=f"{name}: PixelData holds 1152 bytes, 65535 x 65535 x 16 bits needs 8589672450"
    ):
        decode_ct_series(str(small.ct_dir))


def test_rejects_short_pixel_data(small) -> None:
    path = _by_position(small.ct_dir)[2]
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:1024]
    ds.save_as(path)
    with pytest.raises(
        DecodeError, match=f"{path.name}: PixelData holds 1024 bytes, 24 x 24 x 16 bits needs 1152"
    ):
        decode_ct_series(str(small.ct_dir))


def test_rejects_pixel_data_claiming_more_than_the_file_holds(small) -> None:
    path = _by_position(small.ct_dir)[3]
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(DecodeError, match=f"{path.name}: PixelData claims 1152 bytes, the file holds 852"):
        decode_ct_series(str(small.ct_dir))


def test_rejects_series_over_the_memory_limit(small) -> None:
    with pytest.raises(DecodeError, match=r"8 slices of 24 x 24 need 0.00 GiB as float32 HU, over the limit"):
        decode_ct_series(str(small.ct_dir), max_volume_bytes=8 * 24 * 24 * 4 - 1)
    assert decode_ct_series(str(small.ct_dir), max_volume_bytes=8 * 24 * 24 * 4).hu.shape == (8, 24, 24)


@pytest.fixture()
def compressed(tmp_path: Path, request: pytest.FixtureRequest):
    return make_phantom(
        tmp_path / "c", shape_zyx=(4, 32, 32), transfer_syntax=request.param, seed=7, write_seg=False
    )


@pytest.mark.parametrize("compressed", [RLELossless, JPEG2000Lossless, JPEGLSLossless], indirect=True)
def test_rejects_compressed_matrix_beyond_4096(compressed) -> None:
    """Compressed data cannot bound the matrix by its size: 65535 x 65535 is refused outright."""
    name = _by_position(compressed.ct_dir)[1].name
    _edit(compressed.ct_dir, 1, Rows=65535, Columns=65535)
    with pytest.raises(
        DecodeError, match=f"{name}: compressed image matrix 65535 x 65535 .* exceeds 4096 x 4096"
    ):
        decode_ct_series(str(compressed.ct_dir))


@pytest.mark.parametrize(
    ("compressed", "kind"),
    [(JPEG2000Lossless, "JPEG 2000"), (JPEGLSLossless, "JPEG-LS")],
    indirect=["compressed"],
)
def test_rejects_codestream_that_disagrees_with_the_header(compressed, kind: str) -> None:
    """Decoders allocate from the codestream's own size: it must be the header's."""
    name = _by_position(compressed.ct_dir)[1].name
    _edit(compressed.ct_dir, 1, Rows=16)
    with pytest.raises(
        DecodeError, match=f"{name}: {kind} codestream is 32 x 32 x 1 .* header says 16 x 32 x 1"
    ):
        decode_ct_series(str(compressed.ct_dir))


@pytest.mark.parametrize("compressed", [RLELossless], indirect=True)
def test_rejects_encapsulated_pixel_data_without_fragments(compressed) -> None:
    path = _by_position(compressed.ct_dir)[0]
    ds = pydicom.dcmread(path)
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"  # an empty basic offset table, no fragment
    ds.save_as(path)
    with pytest.raises(
        DecodeError, match=f"{path.name}: encapsulated PixelData holds no compressed fragment"
    ):
        decode_ct_series(str(compressed.ct_dir))


@pytest.mark.parametrize("compressed", [RLELossless], indirect=True)
def test_decoder_panic_becomes_a_decode_error(compressed, monkeypatch: pytest.MonkeyPatch) -> None:
    """pylibjpeg-rle panics in Rust on some corrupt frames; pyo3 raises a BaseException for it."""
    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})

    def panicking_decoder(ds: pydicom.Dataset) -> np.ndarray:
        raise panic("index out of bounds: the len is 8 but the index is 9")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", panicking_decoder)
    with pytest.raises(
        DecodeError, match="pixel data cannot be decoded .*PanicException: index out of bounds"
    ):
        decode_ct_series(str(compressed.ct_dir))


def test_other_base_exceptions_are_not_swallowed(small, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(ds: pydicom.Dataset) -> np.ndarray:
        raise KeyboardInterrupt

    monkeypatch.setattr(pydicom.pixels, "pixel_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decode_ct_series(str(small.ct_dir))


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")
def test_single_slice_with_nan_thickness_is_rejected(tmp_path: Path) -> None:
    p = make_phantom(tmp_path / "one", shape_zyx=(1, 8, 8), write_seg=False)
    _edit(p.ct_dir, 0, SliceThickness="NaN")
    with pytest.raises(DecodeError, match=r"SliceThickness \[nan\] is not finite"):
        decode_ct_series(str(p.ct_dir))

"""Header claims against the bytes present: the pure checks, one rejection at a time."""

from __future__ import annotations

import struct
from functools import partial
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from pipeline.dicom.codestreams import MAX_ENCAPSULATED_MATRIX, check_codestream
from pipeline.dicom.ct_checks import check_plane_geometry, check_rescale, check_volume_bytes
from pipeline.dicom.safe_read import integer, numbers, pixel_data_extent, read_header
from pipeline.errors import DecodeError
from tests.support.phantoms import make_phantom

fail = partial(DecodeError, series_uid="1.2.3")
pytestmark = pytest.mark.filterwarnings(  # the invalid values these tests write, as pydicom reads them
    "ignore:Invalid value for VR:UserWarning", "ignore:Value .* is not valid for elements:UserWarning"
)


def _ds(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


# ---- values -----------------------------------------------------------------------------------


def test_numbers_reads_finite_values_and_absence() -> None:
    assert numbers(_ds(PixelSpacing=["0.7", "1.3"]), "PixelSpacing", "a.dcm", fail, count=2) == (0.7, 1.3)
    assert numbers(_ds(), "PixelSpacing", "a.dcm", fail, count=2) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["1", "2"], r"a.dcm: RescaleSlope has 2 value\(s\) .*expected 1"),
        ("NaN", r"a.dcm: RescaleSlope \[nan\] is not finite"),
        ("-Infinity", r"a.dcm: RescaleSlope \[-inf\] is not finite"),
    ],
)
def test_numbers_reject_wrong_count_and_non_finite(value: object, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        numbers(_ds(RescaleSlope=value), "RescaleSlope", "a.dcm", fail, count=1)


def test_integer_requires_presence_without_default() -> None:
    assert integer(_ds(), "NumberOfFrames", "a.dcm", fail, default=1) == 1
    with pytest.raises(DecodeError, match="a.dcm has no Rows"):
        integer(_ds(), "Rows", "a.dcm", fail)
    with pytest.raises(DecodeError, match="a.dcm: NumberOfFrames 2.5 is not an integer"):
        integer(_ds(NumberOfFrames="2.5"), "NumberOfFrames", "a.dcm", fail)


# ---- rescale ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slope", "intercept", "bits_stored", "signed"),
    [
        ("1", "-1024", 12, False),  # the usual unsigned 12-bit encoding
        ("1", "-1024", 16, False),
        ("1", "0", 16, True),
        ("1", "-1024", 16, True),
        ("0.5", "-1024", 12, False),
        (None, None, 16, True),  # absent: identity
    ],
)
def test_rescale_accepts_real_ct_encodings(
    slope: str | None, intercept: str | None, bits_stored: int, signed: bool
) -> None:
    ds = _ds() if slope is None else _ds(RescaleSlope=slope, RescaleIntercept=intercept)
    check_rescale(ds, "a.dcm", fail, bits_stored=bits_stored, signed=signed)


@pytest.mark.parametrize(
    ("slope", "intercept", "message"),
    [
        ("0", "0", "RescaleSlope is 0"),
        ("1", "1e300", r"onto 1e\+300 to 1e\+300 HU"),
        ("NaN", "0", r"RescaleSlope \[nan\] is not finite"),
        ("1", "inf", r"RescaleIntercept \[inf\] is not finite"),
        ("1e-9", "0", "cannot|onto"),  # every stored value within a micro-HU of 0
        ("1000", "-1024", r"within \+-1e\+06"),
        ("-1", "4000", "onto"),  # a negative slope over unsigned 12 bits: 4000 down to -95 HU
    ],
)
def test_rescale_rejects_degenerate_or_implausible(slope: str, intercept: str, message: str) -> None:
    ds = _ds(RescaleSlope=slope, RescaleIntercept=intercept)
    with pytest.raises(DecodeError, match=f"a.dcm: .*{message}"):
        check_rescale(ds, "a.dcm", fail, bits_stored=12, signed=False)


# ---- plane geometry ---------------------------------------------------------------------------


def _plane(**changes: object) -> Dataset:
    values: dict[str, object] = {
        "ImagePositionPatient": ["-100", "-100", "-300"],
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "PixelSpacing": ["0.8", "0.8"],
    }
    values.update(changes)
    return _ds(**values)


def test_plane_geometry_accepts_a_normal_slice() -> None:
    position, orientation, spacing = check_plane_geometry(_plane(), "a.dcm", fail)
    assert position == (-100.0, -100.0, -300.0) and spacing == (0.8, 0.8)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"ImagePositionPatient": ["NaN", "0", "0"]},
            r"ImagePositionPatient \[nan, 0.0, 0.0\] is not finite",
        ),
        ({"ImagePositionPatient": ["0", "0"]}, r"ImagePositionPatient has 2 value\(s\)"),
        ({"ImagePositionPatient": ["0", "0", "1e9"]}, "beyond 100000 mm"),
        ({"ImageOrientationPatient": [0, 0, 0, 0, 1, 0]}, "zero-length direction"),
        ({"ImageOrientationPatient": [1, 0, 0, 1, 0, 0]}, "parallel row and column directions"),
        ({"ImageOrientationPatient": [1, 0, 0, "NaN", 1, 0]}, "ImageOrientationPatient .* is not finite"),
        ({"PixelSpacing": ["NaN", "NaN"]}, r"PixelSpacing \[nan, nan\] is not finite"),
        ({"PixelSpacing": ["0", "0.8"]}, r"PixelSpacing \[0.0, 0.8\] mm, expected above 0"),
        ({"PixelSpacing": ["-0.8", "0.8"]}, "expected above 0"),
    ],
)
def test_plane_geometry_rejects_non_finite_and_degenerate(changes: dict[str, object], message: str) -> None:
    with pytest.raises(DecodeError, match=f"a.dcm: .*{message}"):
        check_plane_geometry(_plane(**changes), "a.dcm", fail)


# ---- sizes ------------------------------------------------------------------------------------


def test_volume_bytes_bound() -> None:
    check_volume_bytes(556, 512, 512, max_volume_bytes=8 * 2**30, fail=fail)
    with pytest.raises(DecodeError, match=r"556 slices of 512 x 512 need 0.54 GiB .* limit of 0.50 GiB"):
        check_volume_bytes(556, 512, 512, max_volume_bytes=2**29, fail=fail)


def _rle_frame(offsets: list[int], count: int = 2, length: int = 200) -> bytes:
    header = struct.pack("<16L", count, *offsets, *([0] * (15 - len(offsets))))
    return header + b"\x00" * (length - 64)


def _rle(head: bytes) -> None:
    kwargs = {"frame_bytes": len(head), "rows": 4, "columns": 4, "samples": 1, "bits_allocated": 16}
    check_codestream(RLELossless, head, "a.dcm", fail, **kwargs)  # type: ignore[arg-type]


def test_rle_header_checks() -> None:
    _rle(_rle_frame([64, 120]))
    with pytest.raises(DecodeError, match=r"RLE header has 3 segment\(s\), the image needs 2"):
        _rle(_rle_frame([64, 100, 150], count=3))
    with pytest.raises(DecodeError, match="first segment starts at offset 70, expected 64"):
        _rle(_rle_frame([70, 120]))
    with pytest.raises(DecodeError, match="RLE segment 1 spans bytes 64 to 5000, outside the 200-byte frame"):
        _rle(_rle_frame([64, 5000]))
    with pytest.raises(DecodeError, match="shorter than its 64-byte header"):
        _rle(b"\x02\x00")


def _siz(width: int, height: int, *, components: int = 1, precision: int = 16, x0: int = 0) -> bytes:
    siz = struct.pack(">HHLLLLLLLLH", 41, 0, width, height, x0, 0, width, height, 0, 0, components)
    return b"\xff\x4f\xff\x51" + siz[:] + bytes([0x80 | (precision - 1), 1, 1]) + b"\xff\x52"


def _j2k(head: bytes, rows: int = 64, columns: int = 64) -> None:
    kwargs = {"frame_bytes": 1000, "rows": rows, "columns": columns, "samples": 1, "bits_allocated": 16}
    check_codestream(JPEG2000Lossless, head, "a.dcm", fail, **kwargs)  # type: ignore[arg-type]


def test_j2k_siz_must_match_the_header() -> None:
    _j2k(_siz(64, 64))
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x14ftypjp2 \x00\x00\x00\x00jp2 "
    _j2k(jp2 + struct.pack(">L", 8 + 60) + b"jp2c" + _siz(64, 64))  # JP2 file format wrapper
    with pytest.raises(
        DecodeError, match=r"JPEG 2000 codestream is 64 x 65535 x 1 .* header says 64 x 64 x 1"
    ):
        _j2k(_siz(65535, 64))
    with pytest.raises(DecodeError, match="precision 17 bits, BitsAllocated is 16"):
        _j2k(_siz(64, 64, precision=17))
    with pytest.raises(DecodeError, match="starts at \\(64, 0\\): empty"):
        _j2k(_siz(64, 64, x0=64))
    with pytest.raises(DecodeError, match="does not start with the SOC and SIZ markers"):
        _j2k(b"\xff\x4f\xff\x52" + bytes(60))


def _sof(width: int, height: int, *, marker: int = 0xF7, fill: bool = False) -> bytes:
    app = b"\xff\xe0\x00\x04ab"
    sof = bytes([0xFF, marker]) + struct.pack(">HBHHB", 11, 16, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app + (b"\xff" if fill else b"") + sof + b"\xff\xda\x00\x08"


def _jls(head: bytes) -> None:
    kwargs = {"frame_bytes": 1000, "rows": 64, "columns": 64, "samples": 1, "bits_allocated": 16}
    check_codestream(JPEGLSLossless, head, "a.dcm", fail, **kwargs)  # type: ignore[arg-type]


def test_jpeg_sof_must_match_the_header() -> None:
    _jls(_sof(64, 64))
    _jls(_sof(64, 64, fill=True))
    with pytest.raises(DecodeError, match=r"JPEG-LS codestream is 64 x 6464 x 1"):
        _jls(_sof(6464, 64))
    with pytest.raises(DecodeError, match="does not start with the SOI marker"):
        _jls(b"\x00" + _sof(64, 64))
    with pytest.raises(DecodeError, match=r"no frame header \(SOF\)"):
        _jls(b"\xff\xd8\xff\xda\x00\x08" + bytes(20))


# ---- files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rle_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = make_phantom(
        tmp_path_factory.mktemp("rle"), shape_zyx=(2, 32, 32), transfer_syntax=RLELossless, write_seg=False
    )
    return sorted(p.ct_dir.iterdir())[0]


def test_extent_of_encapsulated_pixel_data_lists_fragments_without_reading_them(rle_slice: Path) -> None:
    ds, size = read_header(str(rle_slice), fail)
    assert ds.get_item(0x7FE00010, keep_deferred=True).value is None or size < 64 * 1024
    extent = pixel_data_extent(str(rle_slice), ds, size, fail)
    assert extent.declared_length is None and len(extent.fragments) == 1
    offset, length = extent.fragments[0]
    assert rle_slice.read_bytes()[offset : offset + 4] == struct.pack("<L", 2)  # RLE: two segments


def _first_fragment_item(path: Path) -> int:
    """File offset of the first fragment's item tag (after the basic offset table)."""
    ds, _ = read_header(str(path), fail)
    start = ds.get_item(0x7FE00010, keep_deferred=True).value_tell
    (table_length,) = struct.unpack("<L", path.read_bytes()[start + 4 : start + 8])
    return start + 8 + table_length


def test_extent_rejects_a_fragment_longer_than_the_file(rle_slice: Path, tmp_path: Path) -> None:
    data = bytearray(rle_slice.read_bytes())
    item = _first_fragment_item(rle_slice)
    data[item + 4 : item + 8] = struct.pack("<L", 0x7FFFFFF0)  # a fragment that claims 2 GiB
    bad = tmp_path / "long.dcm"
    bad.write_bytes(bytes(data))
    ds, size = read_header(str(bad), fail)
    with pytest.raises(
        DecodeError, match=r"long.dcm: PixelData item 1 claims 2147483632 bytes, the file holds"
    ):
        pixel_data_extent(str(bad), ds, size, fail)


def test_extent_rejects_a_stray_tag_among_items(rle_slice: Path, tmp_path: Path) -> None:
    data = bytearray(rle_slice.read_bytes())
    item = _first_fragment_item(rle_slice)
    data[item : item + 4] = b"\x08\x00\x18\x00"  # the first fragment's tag becomes (0008,0018)
    bad = tmp_path / "tag.dcm"
    bad.write_bytes(bytes(data))
    ds, size = read_header(str(bad), fail)
    with pytest.raises(DecodeError, match=r"item 1 has tag \(0008,0018\), expected an item \(FFFE,E000\)"):
        pixel_data_extent(str(bad), ds, size, fail)


def test_deflated_files_are_refused_before_inflating(tmp_path: Path) -> None:
    p = make_phantom(tmp_path / "p", shape_zyx=(1, 8, 8), write_seg=False)
    path = sorted(p.ct_dir.iterdir())[0]
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DecodeError, match="Deflated Explicit VR Little Endian, which is not accepted"):
        read_header(str(path), fail)


def test_header_read_leaves_large_pixel_data_on_disk(tmp_path: Path) -> None:
    p = make_phantom(tmp_path / "p", shape_zyx=(1, 256, 256), write_seg=False)
    path = sorted(p.ct_dir.iterdir())[0]
    ds, size = read_header(str(path), fail)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.get_item(0x7FE00010, keep_deferred=True).value is None  # deferred, not read
    extent = pixel_data_extent(str(path), ds, size, fail)
    assert extent.present == 256 * 256 * 2


def test_encapsulated_matrix_bound_is_documented() -> None:
    assert MAX_ENCAPSULATED_MATRIX == 4096

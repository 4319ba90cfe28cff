"""What a DICOM header claims, checked against the bytes present before anything is allocated.

Decoders believe the header: pydicom sizes its output from Rows, Columns, BitsAllocated and
NumberOfFrames, native codecs from the sizes inside their codestream, highdicom builds per-frame
tables from NumberOfFrames. A header that claims more than the file holds therefore becomes a
memory bomb or a native crash, and a header with non-finite numbers becomes a silently wrong
result. Every claim is checked here against the file's size and the element lengths in it, and
every number the pipeline computes with must be finite and plausible. Headers are read with large
elements deferred (left on disk), so a claimed multi-gigabyte element is never read to check it.

Each check raises the error its caller passes in (``DecodeError`` for CT, ``ReferenceSegError``
for the reference SEG), with the file name and what was found versus what was expected.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from pipeline.errors import PipelineError

Fail = Callable[[str], PipelineError]
"""Builds the error to raise from a message (for example ``partial(DecodeError, series_uid=uid)``)."""

DEFER_BYTES = 64 * 1024
"""Elements longer than this stay on disk when a header is read (pixel data, large private blobs)."""

PIXEL_DATA_TAG = 0x7FE00010
CODESTREAM_HEAD_BYTES = 64 * 1024
"""How much of a compressed frame is read to find its codestream header (SIZ, SOF, RLE header)."""

MAX_ENCAPSULATED_MATRIX = 4096
"""Largest Rows or Columns accepted for compressed CT. Clinical CT is reconstructed at 512 x 512,
sometimes 768 or 1024, and rarely 2048 (high-resolution and photon-counting scanners); 4096 is twice
the largest. For compressed data the file size cannot bound the matrix, and a decoder allocates
rows x columns before it finds the codestream short: 4096 x 4096 x 16 bits caps that at 32 MiB."""

DEFAULT_MAX_VOLUME_BYTES = 8 * 1024**3
"""Default bound on one decoded series (slices x rows x columns x 4 bytes, float32 HU)."""

HU_BYTES_PER_VOXEL = 4
"""A decoded series is at most float32 (int16 when rescaling keeps integers)."""

HU_MUST_REPRESENT = (-1000.0, 1000.0)
"""Every CT encoding can store air (-1000 HU) to dense bone (+1000 HU): a rescale whose stored range
cannot is not a CT rescale (a slope of 1e-9, an intercept of 1e300)."""

HU_REPRESENTABLE_LIMIT = 1.0e6
"""Physical CT values end near +30,000 HU (metal on extended-scale scanners) and -1024 HU (air), with
padding values down to -32768; a rescale that can produce more than a million HU is not plausible."""

MAX_COORDINATE_MM = 1.0e5
"""Patient coordinates beyond 100 m are not a scanner's: such positions are corrupt, not far away."""

MAX_PIXEL_SPACING_MM = 100.0
"""CT pixels are 0.2 to 2 mm; 100 mm bounds corrupt values without judging unusual scanners."""

MIN_DIRECTION_NORM = 1e-3
"""An orientation vector shorter than this is zero-length: it has no direction to normalise."""

MAX_DIRECTION_COSINE = 1.0 - 1e-3
"""Row and column directions whose normalised dot product exceeds this are parallel (no normal)."""

SEG_BITS_ALLOCATED = {"BINARY": (1,), "FRACTIONAL": (8,), "LABELMAP": (8, 16)}
"""Bits Allocated by Segmentation Type (PS3.3 C.8.20.2; LABELMAP from Supplement 243)."""

_ITEM = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
_JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RST0-7, SOI


@dataclass(frozen=True)
class PixelDataExtent:
    """Where a file's PixelData value lies and how much of it the file holds."""

    offset: int
    """File offset of the first byte of the value."""
    declared_length: int | None
    """The element's length, or None for undefined length (encapsulated)."""
    present: int
    """Bytes of the value in the file: the declared length when the file holds all of it."""
    fragments: tuple[tuple[int, int], ...] = ()
    """(file offset, length) of each compressed fragment, after the basic offset table."""


@dataclass(frozen=True)
class CtSliceHeader:
    """The checked numbers of one CT slice: every one finite and consistent with the file."""

    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    slope: float
    intercept: float
    position_mm: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing_mm: tuple[float, float]


# ---- reading ----------------------------------------------------------------------------------


def read_header(path: str, fail: Fail, *, what: str = "") -> tuple[FileDataset, int]:
    """The dataset at ``path`` with large elements left on disk, and the file's size in bytes.

    Deflated files are refused: inflating happens before any element can be checked, and a
    small file can inflate to gigabytes.
    """
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
        meta = pydicom.filereader.read_file_meta_info(path)
        if str(meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
            raise fail(
                f"{what}{name} uses Deflated Explicit VR Little Endian, which is not accepted: "
                "the whole dataset would be inflated before its size could be checked"
            )
        dataset = pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except PipelineError:
        raise
    except InvalidDicomError as exc:
        raise fail(f"{what}{name} is not a DICOM file ({exc})") from exc
    except Exception as exc:  # truncated or garbled headers raise a variety of errors
        raise fail(f"{what}{name} is unreadable: {type(exc).__name__}: {exc}") from exc
    return dataset, size


def transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    return UID(str(meta.get("TransferSyntaxUID", "")) if meta is not None else "")


def known_transfer_syntax(ds: Dataset, name: str, fail: Fail) -> UID:
    """The file's transfer syntax, which must be one pydicom knows (it decides how pixels are read)."""
    syntax = transfer_syntax(ds)
    if not syntax.is_transfer_syntax:
        raise fail(f"{name}: TransferSyntaxUID {str(syntax)!r} is not a known transfer syntax")
    return syntax


def pixel_data_extent(path: str, ds: Dataset, file_size: int, fail: Fail) -> PixelDataExtent:
    """Where the PixelData value lies; for encapsulated data, every fragment, checked to fit."""
    name = os.path.basename(path)
    element = ds.get_item(PIXEL_DATA_TAG, keep_deferred=True)
    if element is None:
        raise fail(f"{name} has no pixel data")
    if not isinstance(element, RawDataElement):
        raise TypeError("pixel_data_extent needs a dataset from read_header, its PixelData not yet read")
    offset = int(element.value_tell)
    remaining = max(0, file_size - offset)
    if element.length != 0xFFFFFFFF:
        declared = int(element.length)
        if declared > remaining:
            raise fail(
                f"{name}: PixelData claims {declared} bytes, the file holds {remaining} after its "
                "header (truncated)"
            )
        return PixelDataExtent(offset=offset, declared_length=declared, present=declared)
    fragments = _walk_fragments(path, offset, file_size, name, fail)
    return PixelDataExtent(
        offset=offset,
        declared_length=None,
        present=sum(length for _, length in fragments),
        fragments=fragments,
    )


def _walk_fragments(
    path: str, offset: int, file_size: int, name: str, fail: Fail
) -> tuple[tuple[int, int], ...]:
    """The items of encapsulated pixel data (PS3.5 A.4): a basic offset table, then fragments."""
    items: list[tuple[int, int]] = []
    position = offset
    with open(path, "rb") as f:
        while True:
            f.seek(position)
            head = f.read(8)
            if len(head) < 8:
                raise fail(
                    f"{name}: encapsulated PixelData ends after {len(items)} item(s) without a "
                    "sequence delimiter (truncated)"
                )
            group, element, length = struct.unpack("<HHL", head)
            if (group, element) == _SEQUENCE_DELIMITER:
                break
            if (group, element) != _ITEM:
                raise fail(
                    f"{name}: encapsulated PixelData item {len(items)} has tag "
                    f"({group:04X},{element:04X}), expected an item (FFFE,E000)"
                )
            remaining = file_size - position - 8
            if length > remaining:
                raise fail(
                    f"{name}: PixelData item {len(items)} claims {length} bytes, "
                    f"the file holds {remaining} (truncated)"
                )
            items.append((position + 8, length))
            position += 8 + length
    fragments = tuple(items[1:])  # the first item is the basic offset table, possibly empty
    if not any(length for _, length in fragments):
        raise fail(f"{name}: encapsulated PixelData holds no compressed fragment")
    return fragments


def codestream_head(path: str, fragments: tuple[tuple[int, int], ...]) -> bytes:
    """The first bytes of the compressed frame (fragments of a single frame, concatenated)."""
    parts: list[bytes] = []
    wanted = CODESTREAM_HEAD_BYTES
    with open(path, "rb") as f:
        for offset, length in fragments:
            if wanted <= 0:
                break
            f.seek(offset)
            parts.append(f.read(min(length, wanted)))
            wanted -= len(parts[-1])
    return b"".join(parts)


# ---- values -----------------------------------------------------------------------------------


def get_value(ds: Dataset, keyword: str, name: str, fail: Fail) -> Any:
    """The value of ``keyword``, or None when absent or empty; a value that cannot be read fails."""
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise fail(f"{name}: {keyword} cannot be read ({type(exc).__name__}: {exc})") from exc
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    return value


def numbers(ds: Dataset, keyword: str, name: str, fail: Fail, *, count: int) -> tuple[float, ...] | None:
    """Exactly ``count`` finite numbers from ``keyword``, or None when it is absent."""
    value = get_value(ds, keyword, name, fail)
    if value is None:
        return None
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    if len(values) != count:
        raise fail(f"{name}: {keyword} has {len(values)} value(s) {values!r}, expected {count}")
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise fail(f"{name}: {keyword} {values!r} is not numeric") from exc
    if not all(math.isfinite(v) for v in floats):
        raise fail(f"{name}: {keyword} {list(floats)} is not finite")
    return floats


def integer(ds: Dataset, keyword: str, name: str, fail: Fail, *, default: int | None = None) -> int:
    """One integer from ``keyword``; ``default`` when absent (absent without a default fails)."""
    value = get_value(ds, keyword, name, fail)
    if value is None:
        if default is None:
            raise fail(f"{name} has no {keyword}")
        return default
    if isinstance(value, (MultiValue, list, tuple)):
        raise fail(f"{name}: {keyword} has {len(value)} values {list(value)!r}, expected one")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise fail(f"{name}: {keyword} {value!r} is not a number") from exc
    if not math.isfinite(number) or number != int(number):
        raise fail(f"{name}: {keyword} {value!r} is not an integer")
    return int(number)


# ---- CT ---------------------------------------------------------------------------------------


def check_ct_slice(path: str, ds: Dataset, file_size: int, fail: Fail) -> CtSliceHeader:
    """Every header claim of one CT Image Storage slice, checked before its pixels are touched."""
    name = os.path.basename(path)
    samples = integer(ds, "SamplesPerPixel", name, fail, default=1)
    if samples != 1:
        raise fail(f"{name}: SamplesPerPixel {samples}, a CT image has 1 (single-channel)")
    frames = integer(ds, "NumberOfFrames", name, fail, default=1)
    if frames != 1:
        raise fail(f"{name}: NumberOfFrames {frames}, a CT Image Storage instance holds one frame")
    rows = integer(ds, "Rows", name, fail)
    columns = integer(ds, "Columns", name, fail)
    if rows < 1 or columns < 1:
        raise fail(f"{name}: image matrix {rows} x {columns} (rows x columns) is empty")
    bits_allocated = integer(ds, "BitsAllocated", name, fail)
    if bits_allocated != 16:
        raise fail(f"{name}: BitsAllocated {bits_allocated}, the CT Image Module requires 16")
    bits_stored = integer(ds, "BitsStored", name, fail)
    if not 1 <= bits_stored <= bits_allocated:
        raise fail(f"{name}: BitsStored {bits_stored}, expected 1 to BitsAllocated {bits_allocated}")
    representation = integer(ds, "PixelRepresentation", name, fail)
    if representation not in (0, 1):
        raise fail(f"{name}: PixelRepresentation {representation}, expected 0 (unsigned) or 1 (signed)")
    _check_ct_pixel_bytes(path, ds, file_size, fail, rows=rows, columns=columns, bits=bits_allocated)
    slope, intercept = check_rescale(ds, name, fail, bits_stored=bits_stored, signed=representation == 1)
    position, orientation, spacing = check_plane_geometry(ds, name, fail)
    return CtSliceHeader(
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=representation == 1,
        slope=slope,
        intercept=intercept,
        position_mm=(position[0], position[1], position[2]),
        orientation=orientation,
        pixel_spacing_mm=(spacing[0], spacing[1]),
    )


def _check_ct_pixel_bytes(
    path: str, ds: Dataset, file_size: int, fail: Fail, *, rows: int, columns: int, bits: int
) -> None:
    name = os.path.basename(path)
    syntax = known_transfer_syntax(ds, name, fail)
    extent = pixel_data_extent(path, ds, file_size, fail)
    if not syntax.is_encapsulated:
        if extent.declared_length is None:
            raise fail(f"{name}: PixelData has undefined length under the native transfer syntax {syntax}")
        needed = rows * columns * bits // 8
        if extent.present not in (needed, needed + needed % 2):
            raise fail(
                f"{name}: PixelData holds {extent.present} bytes, "
                f"{rows} x {columns} x {bits} bits needs {needed}"
            )
        return
    if extent.declared_length is not None:
        raise fail(
            f"{name}: PixelData has a defined length ({extent.declared_length}) under the "
            f"encapsulated transfer syntax {syntax}; encapsulated pixel data has undefined length"
        )
    if rows > MAX_ENCAPSULATED_MATRIX or columns > MAX_ENCAPSULATED_MATRIX:
        raise fail(
            f"{name}: compressed image matrix {rows} x {columns} (rows x columns) exceeds "
            f"{MAX_ENCAPSULATED_MATRIX} x {MAX_ENCAPSULATED_MATRIX}, far beyond any CT reconstruction"
        )
    check_codestream(
        syntax,
        codestream_head(path, extent.fragments),
        name,
        fail,
        frame_bytes=extent.present,
        rows=rows,
        columns=columns,
        samples=1,
        bits_allocated=bits,
    )


def check_codestream(
    syntax: UID,
    head: bytes,
    name: str,
    fail: Fail,
    *,
    frame_bytes: int,
    rows: int,
    columns: int,
    samples: int,
    bits_allocated: int,
) -> None:
    """The compressed frame's own header agrees with the DICOM header (decoders size from it)."""
    if syntax == RLELossless:
        _check_rle_header(head, name, fail, frame_bytes=frame_bytes, segments=samples * bits_allocated // 8)
        return
    if syntax in JPEG2000TransferSyntaxes:
        found = _j2k_size(head, name, fail)
        kind = "JPEG 2000"
    elif syntax in JPEGLSTransferSyntaxes or syntax in JPEGTransferSyntaxes:
        found = _jpeg_size(head, name, fail)
        kind = "JPEG-LS" if syntax in JPEGLSTransferSyntaxes else "JPEG"
    else:
        return  # a compressed syntax we do not parse: the decoder's own checks apply
    height, width, components, precision = found
    if (height not in (0, rows)) or width != columns or components != samples:
        raise fail(
            f"{name}: {kind} codestream is {height} x {width} x {components} (rows x columns x samples), "
            f"the header says {rows} x {columns} x {samples}"
        )
    if not 1 <= precision <= bits_allocated:
        raise fail(f"{name}: {kind} codestream precision {precision} bits, BitsAllocated is {bits_allocated}")


def _check_rle_header(head: bytes, name: str, fail: Fail, *, frame_bytes: int, segments: int) -> None:
    """PS3.5 G.5: 16 little-endian uint32, the segment count then 15 segment offsets."""
    if len(head) < 64:
        raise fail(f"{name}: RLE frame is {len(head)} bytes, shorter than its 64-byte header")
    count, *offsets = struct.unpack("<16L", head[:64])
    if count != segments:
        raise fail(f"{name}: RLE header has {count} segment(s), the image needs {segments}")
    used = offsets[:count]
    if used[0] != 64:
        raise fail(f"{name}: RLE first segment starts at offset {used[0]}, expected 64")
    ends = [*used[1:], frame_bytes]
    for i, (start, end) in enumerate(zip(used, ends, strict=True)):
        if not start < end <= frame_bytes:
            raise fail(
                f"{name}: RLE segment {i + 1} spans bytes {start} to {end}, "
                f"outside the {frame_bytes}-byte frame or empty"
            )


def _j2k_size(head: bytes, name: str, fail: Fail) -> tuple[int, int, int, int]:
    """Height, width, components and precision from a JPEG 2000 SIZ marker (15444-1 A.5.1)."""
    offset = 0
    if head.startswith(b"\x00\x00\x00\x0cjP  "):  # JP2 file format: find the codestream box
        offset = 12
        while offset + 8 <= len(head) and head[offset + 4 : offset + 8] != b"jp2c":
            box = int.from_bytes(head[offset : offset + 4], "big")
            if box < 8:
                break
            offset += box
        offset += 8
    siz = head[offset : offset + 45]
    if len(siz) < 45 or siz[:4] != b"\xff\x4f\xff\x51":
        raise fail(f"{name}: JPEG 2000 codestream does not start with the SOC and SIZ markers")
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">4L", siz[8:24])
    (components,) = struct.unpack(">H", siz[40:42])
    precision = (siz[42] & 0x7F) + 1
    if xosiz >= xsiz or yosiz >= ysiz:
        raise fail(f"{name}: JPEG 2000 image area {xsiz} x {ysiz} starts at ({xosiz}, {yosiz}): empty")
    return ysiz - yosiz, xsiz - xosiz, components, precision


def _jpeg_size(head: bytes, name: str, fail: Fail) -> tuple[int, int, int, int]:
    """Height, width, components and precision from a JPEG or JPEG-LS SOF segment (10918-1 B.2.2)."""
    if not head.startswith(b"\xff\xd8"):
        raise fail(f"{name}: JPEG codestream does not start with the SOI marker")
    offset = 2
    while offset + 4 <= len(head):
        if head[offset] != 0xFF:
            raise fail(f"{name}: JPEG codestream has no marker at byte {offset} before its frame header")
        marker = head[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            offset += 2
            continue
        (length,) = struct.unpack(">H", head[offset + 2 : offset + 4])
        if marker in _JPEG_SOF:
            if offset + 10 > len(head):
                break
            precision = head[offset + 4]
            height, width = struct.unpack(">HH", head[offset + 5 : offset + 9])
            return height, width, head[offset + 9], precision
        if marker == 0xDA or length < 2:
            break
        offset += 2 + length
    raise fail(f"{name}: JPEG codestream has no frame header (SOF) in its first {len(head)} bytes")


def check_rescale(
    ds: Dataset, name: str, fail: Fail, *, bits_stored: int, signed: bool
) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept: finite, slope non-zero, a plausible HU range.

    The stored range the bits allow must map onto HU that include air to bone
    (:data:`HU_MUST_REPRESENT`) and stay within :data:`HU_REPRESENTABLE_LIMIT`.
    """
    slope_value = numbers(ds, "RescaleSlope", name, fail, count=1)
    intercept_value = numbers(ds, "RescaleIntercept", name, fail, count=1)
    slope = slope_value[0] if slope_value is not None else 1.0
    intercept = intercept_value[0] if intercept_value is not None else 0.0
    if slope == 0.0:
        raise fail(f"{name}: RescaleSlope is 0: every pixel would read {intercept:g} HU")
    low, high = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2**bits_stored - 1)
    hu = sorted((low * slope + intercept, high * slope + intercept))
    air, bone = HU_MUST_REPRESENT
    if not (
        math.isfinite(hu[0])
        and math.isfinite(hu[1])
        and hu[0] <= air
        and hu[1] >= bone
        and max(abs(hu[0]), abs(hu[1])) <= HU_REPRESENTABLE_LIMIT
    ):
        raise fail(
            f"{name}: RescaleSlope {slope:g} and RescaleIntercept {intercept:g} map stored values "
            f"{low} to {high} onto {hu[0]:.6g} to {hu[1]:.6g} HU; a CT rescale covers {air:g} to "
            f"{bone:g} HU within +-{HU_REPRESENTABLE_LIMIT:g}"
        )
    return slope, intercept


def check_plane_geometry(
    ds: Dataset, name: str, fail: Fail
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """ImagePositionPatient, ImageOrientationPatient and PixelSpacing: finite and non-degenerate."""
    position = numbers(ds, "ImagePositionPatient", name, fail, count=3)
    orientation = numbers(ds, "ImageOrientationPatient", name, fail, count=6)
    spacing = numbers(ds, "PixelSpacing", name, fail, count=2)
    for keyword, value in (
        ("ImagePositionPatient", position),
        ("ImageOrientationPatient", orientation),
        ("PixelSpacing", spacing),
    ):
        if value is None:
            raise fail(f"{name} has no {keyword}")
    assert position is not None and orientation is not None and spacing is not None  # for mypy
    if max(abs(v) for v in position) > MAX_COORDINATE_MM:
        raise fail(f"{name}: ImagePositionPatient {list(position)} mm is beyond {MAX_COORDINATE_MM:g} mm")
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    norms = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
    if min(norms) < MIN_DIRECTION_NORM:
        raise fail(f"{name}: ImageOrientationPatient {list(orientation)} has a zero-length direction")
    if abs(float(np.dot(row, col))) / (norms[0] * norms[1]) > MAX_DIRECTION_COSINE:
        raise fail(
            f"{name}: ImageOrientationPatient {list(orientation)} has parallel row and column "
            "directions (no slice normal)"
        )
    if not all(0.0 < v <= MAX_PIXEL_SPACING_MM for v in spacing):
        raise fail(
            f"{name}: PixelSpacing {list(spacing)} mm, expected above 0 and at most {MAX_PIXEL_SPACING_MM:g}"
        )
    return position, orientation, spacing


def check_volume_bytes(slices: int, rows: int, columns: int, *, max_volume_bytes: int, fail: Fail) -> None:
    """The decoded series fits the memory allowed for one series."""
    needed = slices * rows * columns * HU_BYTES_PER_VOXEL
    if needed > max_volume_bytes:
        raise fail(
            f"{slices} slices of {rows} x {columns} need {needed / 2**30:.2f} GiB as float32 HU, "
            f"over the limit of {max_volume_bytes / 2**30:.2f} GiB for one series"
        )


# ---- reference SEG ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegHeader:
    """The checked frame claims of a SEG."""

    segmentation_type: str
    frames: int
    rows: int
    columns: int
    segments: int


def check_seg_header(
    path: str,
    ds: Dataset,
    file_size: int,
    fail: Fail,
    *,
    ct_slices: int,
    ct_rows: int,
    ct_columns: int,
) -> SegHeader:
    """Frames, matrix and bits of a SEG against its CT and the bytes in the file.

    A SEG frame is one segment on one CT slice, so a SEG of this CT has at most
    ``ct_slices x segments`` frames (LNQ's SEGs keep only frames with nodes); anything above
    that is a header claiming frames that cannot belong to this CT.
    """
    name = os.path.basename(path)
    seg_type = str(get_value(ds, "SegmentationType", name, fail) or "")
    if seg_type not in SEG_BITS_ALLOCATED:
        raise fail(f"{name}: SegmentationType {seg_type!r}, expected one of {sorted(SEG_BITS_ALLOCATED)}")
    bits = integer(ds, "BitsAllocated", name, fail)
    if bits not in SEG_BITS_ALLOCATED[seg_type]:
        expected = " or ".join(str(b) for b in SEG_BITS_ALLOCATED[seg_type])
        raise fail(f"{name}: BitsAllocated {bits} for a {seg_type} SEG, expected {expected}")
    samples = integer(ds, "SamplesPerPixel", name, fail, default=1)
    if samples != 1:
        raise fail(f"{name}: SamplesPerPixel {samples}, a SEG has 1")
    rows = integer(ds, "Rows", name, fail)
    columns = integer(ds, "Columns", name, fail)
    if (rows, columns) != (ct_rows, ct_columns):
        raise fail(f"{name}: frames are {rows}x{columns}, the CT slices {ct_rows}x{ct_columns}")
    segments = len(get_value(ds, "SegmentSequence", name, fail) or [])
    if segments < 1:
        raise fail(f"{name} has no segments (SegmentSequence is empty)")
    frames = integer(ds, "NumberOfFrames", name, fail)
    most = ct_slices * (1 if seg_type == "LABELMAP" else segments)
    if not 1 <= frames <= most:
        raise fail(
            f"{name}: NumberOfFrames {frames}, expected 1 to {most} "
            f"(one frame per CT slice{'' if seg_type == 'LABELMAP' else ' and segment'}: "
            f"{ct_slices} slices x {segments} segment(s))"
        )
    per_frame = get_value(ds, "PerFrameFunctionalGroupsSequence", name, fail) or []
    if len(per_frame) != frames:
        raise fail(
            f"{name}: NumberOfFrames {frames}, but PerFrameFunctionalGroupsSequence has "
            f"{len(per_frame)} item(s)"
        )
    extent = pixel_data_extent(path, ds, file_size, fail)
    if known_transfer_syntax(ds, name, fail).is_encapsulated:
        if len(extent.fragments) < frames:
            raise fail(f"{name}: {frames} frames in {len(extent.fragments)} compressed fragment(s)")
    else:
        needed = (frames * rows * columns * bits + 7) // 8
        if extent.declared_length is None or extent.present not in (needed, needed + needed % 2):
            raise fail(
                f"{name}: PixelData holds {extent.present} bytes, {frames} frames of "
                f"{rows} x {columns} x {bits} bit(s) need {needed}"
            )
    _check_segment_numbers(
        ds, per_frame, name, fail, segments=segments, per_frame_segment=seg_type != "LABELMAP"
    )
    return SegHeader(segmentation_type=seg_type, frames=frames, rows=rows, columns=columns, segments=segments)


def _check_segment_numbers(
    ds: Dataset, per_frame: Any, name: str, fail: Fail, *, segments: int, per_frame_segment: bool
) -> None:
    """Segments are numbered 1 to n (PS3.3 C.8.20.2), and every BINARY or FRACTIONAL frame
    references one of them: highdicom leaves out a frame of an undescribed segment, silently."""
    try:
        numbers_found = [integer(item, "SegmentNumber", name, fail) for item in ds.SegmentSequence]
        if sorted(numbers_found) != list(range(1, segments + 1)):
            shown = ", ".join(str(n) for n in numbers_found[:6])
            raise fail(f"{name}: SegmentNumber values {shown}; segments are numbered 1 to {segments}")
        if not per_frame_segment:
            return
        shared = ds.get("SharedFunctionalGroupsSequence") or [Dataset()]
        shared_identification = shared[0].get("SegmentIdentificationSequence")
        for index, item in enumerate(per_frame):
            identification = item.get("SegmentIdentificationSequence") or shared_identification
            if not identification:
                raise fail(f"{name}: frame {index + 1} names no segment (no SegmentIdentificationSequence)")
            number = integer(identification[0], "ReferencedSegmentNumber", name, fail)
            if not 1 <= number <= segments:
                raise fail(
                    f"{name}: frame {index + 1} belongs to segment {number}, "
                    f"the SEG describes segments 1 to {segments}"
                )
    except PipelineError:
        raise
    except Exception as exc:  # a garbled sequence item
        raise fail(f"{name}: segment numbers cannot be read: {type(exc).__name__}: {exc}") from exc

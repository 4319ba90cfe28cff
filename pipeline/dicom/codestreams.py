"""What a compressed frame's own codestream claims (RLE, JPEG 2000, JPEG, JPEG-LS), checked against
the header before a native decoder sees it: a codestream larger than the image it belongs to, or
one whose header is cut short, would make the decoder allocate or read out of bounds.
"""

from __future__ import annotations

import struct

from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from pipeline.dicom.safe_read import (
    Fail,
)

MAX_ENCAPSULATED_MATRIX = 4096
"""Largest Rows or Columns accepted for compressed CT. Clinical CT is reconstructed at 512 x 512,
sometimes 768 or 1024, and rarely 2048 (high-resolution and photon-counting scanners); 4096 is twice
the largest. For compressed data the file size cannot bound the matrix, and a decoder allocates
rows x columns before it finds the codestream short: 4096 x 4096 x 16 bits caps that at 32 MiB."""


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


_JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RST0-7, SOI


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

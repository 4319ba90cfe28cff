"""Reading untrusted DICOM headers: what a file claims, checked against the bytes present first.

Decoders believe the header: pydicom sizes its output from Rows, Columns, BitsAllocated and
NumberOfFrames, native codecs from the sizes inside their codestream, highdicom builds per-frame
tables from NumberOfFrames. A header that claims more than the file holds therefore becomes a
memory bomb or a native crash, and a header with non-finite numbers a silently wrong result. Headers
are read here with large elements deferred (left on disk), so a claimed multi-gigabyte element is
never read to check it; the pixel data's extent is found by walking the file's own element lengths;
values are read as finite numbers or refused. The checks of what a CT slice (``ct_checks``), a
compressed codestream (``codestreams``) or a reference SEG (``seg_checks``) claims build on these.

Each check raises the error its caller passes in (``DecodeError`` for CT, ``ReferenceSegError`` for
the reference SEG), with the file name and what was found versus what was expected.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
)

from pipeline.errors import PipelineError

Fail = Callable[[str], PipelineError]
"""Builds the error to raise from a message (for example ``partial(DecodeError, series_uid=uid)``)."""


DEFER_BYTES = 64 * 1024
"""Elements longer than this stay on disk when a header is read (pixel data, large private blobs)."""


PIXEL_DATA_TAG = 0x7FE00010


CODESTREAM_HEAD_BYTES = 64 * 1024
"""How much of a compressed frame is read to find its codestream header (SIZ, SOF, RLE header)."""


_ITEM = (0xFFFE, 0xE000)


_SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)


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

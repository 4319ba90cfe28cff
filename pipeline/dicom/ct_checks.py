"""What a CT slice and a CT series claim, checked before any array is allocated.

Per slice (:func:`check_ct_slice`): the pixel data is all there, a compressed frame's codestream
agrees with the header, the rescale maps stored values onto HU a CT can hold, and the plane
geometry (position, orientation, pixel spacing) is finite and non-degenerate. Per series: one
modality, one orientation, one pixel spacing and one matrix, and the decoded volume fits the memory
allowed for one series. The tolerances of the geometry are declared here, once: the reference SEG's
plane checks (``seg_checks``) use the same.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from pipeline.dicom.codestreams import MAX_ENCAPSULATED_MATRIX, check_codestream
from pipeline.dicom.safe_read import (
    Fail,
    codestream_head,
    integer,
    known_transfer_syntax,
    numbers,
    pixel_data_extent,
)

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


ORTHOGONALITY_TOLERANCE = 1e-3
"""Row and column directions must be orthogonal: the absolute cosine of their angle at most this
(parallel ones have no normal at all)."""
ORIENTATION_TOLERANCE = 1e-4
"""Direction cosines that must agree (the slices of one CT, a SEG frame and its CT slice) agree
within this."""
PIXEL_SPACING_TOLERANCE_MM = 1e-3
"""Pixel spacings that must agree (the slices of one CT, a SEG frame and its CT slice) agree within
this."""


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
    cosine = abs(float(np.dot(row, col))) / (norms[0] * norms[1])
    if cosine > 1.0 - ORTHOGONALITY_TOLERANCE:
        raise fail(
            f"{name}: ImageOrientationPatient {list(orientation)} has parallel row and column "
            "directions (no slice normal)"
        )
    if cosine > ORTHOGONALITY_TOLERANCE:
        raise fail(f"{name}: ImageOrientationPatient {list(orientation)} is not orthogonal")
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

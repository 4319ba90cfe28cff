"""Decode a folder of CT DICOM files into one HU volume with checked geometry.

Slices are ordered by their position along the slice normal, never by file name
or InstanceNumber. Anything that would make the volume wrong (a second series, a
missing slice, a tilted or mixed stack, a truncated file) is rejected with a
message that says what was found and what was expected. Every header claim is
checked against the bytes in the file before any pixel array is allocated
(``pipeline.dicom.ct_checks``), and the decoded series is bounded by
``max_volume_bytes``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial

import numpy as np
import pydicom
import pydicom.pixels

from pipeline.dicom.ct_checks import (
    DEFAULT_MAX_VOLUME_BYTES,
    ORIENTATION_TOLERANCE,
    PIXEL_SPACING_TOLERANCE_MM,
    CtSliceHeader,
    check_ct_slice,
    check_volume_bytes,
)
from pipeline.dicom.safe_read import numbers, read_header, transfer_syntax
from pipeline.errors import DecodeError
from pipeline.geometry import CtVolume, Geometry, float3

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SLICE_SPACING_TOLERANCE_MM = 0.05
DUPLICATE_POSITION_TOLERANCE_MM = 1e-3
IN_PLANE_OFFSET_TOLERANCE_MM = 0.05
USED_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
)
"""The header elements decoding reads (all but the pixel data)."""


@dataclass(frozen=True)
class _Slice:
    path: str
    dataset: pydicom.Dataset
    header: CtSliceHeader
    position: np.ndarray


def list_dicom_files(folder: str) -> list[str]:
    """Regular, non-hidden files below ``folder``, sorted for reproducible errors."""
    paths: list[str] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths.extend(os.path.join(root, n) for n in names if not n.startswith("."))
    return sorted(paths)


def decode_ct_series(
    folder: str,
    *,
    expected_series_uid: str | None = None,
    slice_spacing_tolerance_mm: float = SLICE_SPACING_TOLERANCE_MM,
    max_volume_bytes: int = DEFAULT_MAX_VOLUME_BYTES,
) -> CtVolume:
    """Read every file in ``folder`` as one CT series and return it in HU.

    Headers are read and checked first (pixel data stays on disk until then); a series whose
    float32 HU volume would exceed ``max_volume_bytes`` is rejected before it is decoded.
    """
    label = expected_series_uid or folder
    paths = list_dicom_files(folder)
    if not paths:
        raise DecodeError(f"no files in {folder}", series_uid=label)
    read = [(p, *_read(p, label)) for p in paths]
    datasets = [(p, ds) for p, ds, _ in read]
    series_uid = _single_value(datasets, "SeriesInstanceUID", label)
    if expected_series_uid is not None and series_uid != expected_series_uid:
        raise DecodeError(
            f"files belong to series {series_uid!r}, expected {expected_series_uid!r}",
            series_uid=label,
        )
    label = expected_series_uid or series_uid or folder
    _check_modality(datasets, label)
    fail = partial(DecodeError, series_uid=label)
    headers = {p: check_ct_slice(p, ds, size, fail) for p, ds, size in read}
    frame_of_reference = _single_value(datasets, "FrameOfReferenceUID", label)
    row_dir, col_dir = _common_orientation(datasets, label)
    pixel_spacing = _common_pixel_spacing(datasets, label)
    rows, cols = _common_matrix(datasets, label)
    check_volume_bytes(len(datasets), rows, cols, max_volume_bytes=max_volume_bytes, fail=fail)
    normal = np.cross(row_dir, col_dir)
    slices = _sorted_slices(datasets, headers, normal, label)
    slice_spacing = _uniform_spacing(slices, normal, label, tolerance_mm=slice_spacing_tolerance_mm)
    hu = _stack_hu(slices, rows, cols, label)
    direction = np.column_stack([row_dir, col_dir, normal])
    first = slices[0].dataset
    geometry = Geometry(
        size_zyx=(len(slices), rows, cols),
        origin_mm=float3(slices[0].position),
        spacing_mm=(float(pixel_spacing[1]), float(pixel_spacing[0]), slice_spacing),
        direction=tuple(float(v) for v in direction.ravel()),
    )
    return CtVolume(
        hu=hu,
        geometry=geometry,
        series_uid=series_uid,
        study_uid=str(first.get("StudyInstanceUID", "")),
        frame_of_reference_uid=frame_of_reference,
        patient_id=str(first.get("PatientID", "")),
        sop_instance_uids=tuple(
            _sop_uid(s.dataset, "SOPInstanceUID", "MediaStorageSOPInstanceUID") for s in slices
        ),
        source_files=tuple(s.path for s in slices),
        headers=tuple(_without_pixels(s.dataset) for s in slices),
    )


PIXEL_DATA_TAG = 0x7FE00010


def _without_pixels(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The header alone, as ``dcmread(stop_before_pixels=True)`` reads it: the pixels are in the
    volume now."""
    for tag in [t for t in ds.keys() if t >= PIXEL_DATA_TAG]:
        del ds[tag]
    return ds


def _read(path: str, label: str) -> tuple[pydicom.Dataset, int]:
    """The header of one file (pixel data left on disk) and the file's size."""
    name = os.path.basename(path)
    ds, size = read_header(path, partial(DecodeError, series_uid=label))
    try:  # convert what decoding reads now, so a garbled element fails here, naming its file
        for keyword in USED_KEYWORDS:
            ds.get(keyword)
    except Exception as exc:
        raise DecodeError(
            f"{name}: {keyword} cannot be read: {type(exc).__name__}: {exc}", series_uid=label
        ) from exc
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if keyword not in ds:
            raise DecodeError(f"{name} has no {keyword}", series_uid=label)
    if "PixelData" not in ds:
        raise DecodeError(f"{name} has no pixel data", series_uid=label)
    return ds, size


def _sop_uid(ds: pydicom.Dataset, keyword: str, meta_keyword: str) -> str:
    """A SOP UID from the dataset, or from the file meta when the dataset leaves it empty."""
    value = str(ds.get(keyword, "") or "")
    if not value and "file_meta" in dir(ds) and ds.file_meta is not None:
        value = str(ds.file_meta.get(meta_keyword, "") or "")
    return value


def _single_value(datasets: list[tuple[str, pydicom.Dataset]], keyword: str, label: str) -> str:
    values = sorted({str(ds.get(keyword, "")) for _, ds in datasets})
    if len(values) > 1:
        shown = ", ".join(repr(v) for v in values[:4])
        raise DecodeError(f"more than one {keyword} among {len(datasets)} files: {shown}", series_uid=label)
    return values[0]


def _check_modality(datasets: list[tuple[str, pydicom.Dataset]], label: str) -> None:
    for path, ds in datasets:
        modality = str(ds.get("Modality", ""))
        sop_class = _sop_uid(ds, "SOPClassUID", "MediaStorageSOPClassUID")
        if modality != "CT" or sop_class != CT_IMAGE_STORAGE:
            raise DecodeError(
                f"{os.path.basename(path)} is not CT (Modality {modality!r}, "
                f"SOP class {sop_class!r}; expected 'CT', {CT_IMAGE_STORAGE})",
                series_uid=label,
            )


def _common_orientation(
    datasets: list[tuple[str, pydicom.Dataset]], label: str
) -> tuple[np.ndarray, np.ndarray]:
    first = _agreed(datasets, label, "ImageOrientationPatient", ORIENTATION_TOLERANCE, what="orientation")
    row_dir, col_dir = first[:3], first[3:]  # each slice's header was checked: orthogonal, not degenerate
    return row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)


def _common_pixel_spacing(datasets: list[tuple[str, pydicom.Dataset]], label: str) -> np.ndarray:
    first = _agreed(
        datasets, label, "PixelSpacing", PIXEL_SPACING_TOLERANCE_MM, what="pixel spacing", unit=" mm"
    )
    if np.any(first <= 0):
        raise DecodeError(f"pixel spacing {first.tolist()} is not positive", series_uid=label)
    return first


def _agreed(
    datasets: list[tuple[str, pydicom.Dataset]],
    label: str,
    keyword: str,
    tolerance: float,
    *,
    what: str,
    unit: str = "",
) -> np.ndarray:
    """The first slice's ``keyword``, which every slice must match within ``tolerance``."""
    first = np.asarray(getattr(datasets[0][1], keyword), dtype=float)
    for path, ds in datasets[1:]:
        value = np.asarray(getattr(ds, keyword), dtype=float)
        if np.max(np.abs(value - first)) > tolerance:
            raise DecodeError(
                f"{what} differs: {os.path.basename(path)} has {value.round(5).tolist()}{unit}, "
                f"others {first.round(5).tolist()}{unit}",
                series_uid=label,
            )
    return first


def _common_matrix(datasets: list[tuple[str, pydicom.Dataset]], label: str) -> tuple[int, int]:
    matrices = sorted({(int(ds.Rows), int(ds.Columns)) for _, ds in datasets})
    if len(matrices) > 1:
        raise DecodeError(f"image matrix differs between files: {matrices} (rows, columns)", series_uid=label)
    return matrices[0]


def _sorted_slices(
    datasets: list[tuple[str, pydicom.Dataset]],
    headers: dict[str, CtSliceHeader],
    normal: np.ndarray,
    label: str,
) -> list[_Slice]:
    slices = [
        _Slice(path, ds, headers[path], np.asarray(headers[path].position_mm, dtype=float))
        for path, ds in datasets
    ]
    slices.sort(key=lambda s: float(np.dot(s.position, normal)))
    along = np.array([float(np.dot(s.position, normal)) for s in slices])
    for i in range(1, len(slices)):
        if along[i] - along[i - 1] < DUPLICATE_POSITION_TOLERANCE_MM:
            raise DecodeError(
                f"duplicate slice position {along[i]:.3f} mm along the normal in "
                f"{os.path.basename(slices[i - 1].path)} and {os.path.basename(slices[i].path)}",
                series_uid=label,
            )
    origin = slices[0].position
    for s in slices[1:]:
        offset = s.position - origin
        in_plane = offset - np.dot(offset, normal) * normal
        if np.linalg.norm(in_plane) > IN_PLANE_OFFSET_TOLERANCE_MM:
            raise DecodeError(
                f"{os.path.basename(s.path)} is shifted {np.linalg.norm(in_plane):.3f} mm "
                "in plane from the first slice (gantry tilt or mixed stacks are not supported)",
                series_uid=label,
            )
    return slices


def _uniform_spacing(slices: list[_Slice], normal: np.ndarray, label: str, *, tolerance_mm: float) -> float:
    if len(slices) == 1:
        name = os.path.basename(slices[0].path)
        fail = partial(DecodeError, series_uid=label)
        thickness = numbers(slices[0].dataset, "SliceThickness", name, fail, count=1)
        if thickness is None or thickness[0] == 0.0:
            return 1.0  # a lone slice without a thickness: 1 mm, a spacing for the grid only
        if thickness[0] < 0.0:
            raise fail(f"single slice {name}: SliceThickness {thickness[0]:g} mm is negative")
        return thickness[0]
    along = np.array([float(np.dot(s.position, normal)) for s in slices])
    gaps = np.diff(along)
    nominal = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - nominal)))
    if abs(gaps[worst] - nominal) > tolerance_mm:
        raise DecodeError(
            f"slice spacing not uniform ({nominal:.3f} mm then {gaps[worst]:.3f} mm at "
            f"{along[worst + 1]:.2f} mm along the normal, tolerance {tolerance_mm} mm); "
            "a slice is missing or the series mixes stacks",
            series_uid=label,
        )
    return float(np.mean(gaps))


def _stack_hu(slices: list[_Slice], rows: int, cols: int, label: str) -> np.ndarray:
    slopes = [s.header.slope for s in slices]
    intercepts = [s.header.intercept for s in slices]
    integral = all(v == 1.0 for v in slopes) and all(v == round(v) for v in intercepts)
    out = np.empty((len(slices), rows, cols), dtype=np.int16 if integral else np.float32)
    for k, (s, slope, intercept) in enumerate(zip(slices, slopes, intercepts, strict=False)):
        name = os.path.basename(s.path)
        stored = _decode_pixels(s, label)
        if stored.shape != (rows, cols):
            raise DecodeError(
                f"{name}: pixel array {stored.shape}, expected {(rows, cols)}", series_uid=label
            )
        hu = stored.astype(np.float64) * slope + intercept
        if integral and (hu.min() < -32768 or hu.max() > 32767):
            out = out.astype(np.float32)
            integral = False
        out[k] = hu
        s.dataset.PixelData = b""  # release the encoded copy as we go
    if not integral and not np.isfinite(out).all():  # the rescale checks make this unreachable
        raise DecodeError("decoded HU are not all finite", series_uid=label)
    return out


def _decode_pixels(s: _Slice, label: str) -> np.ndarray:
    """One slice's stored values; a decoder that raises or panics becomes a ``DecodeError``."""
    name = os.path.basename(s.path)
    try:
        return pydicom.pixels.pixel_array(s.dataset)
    except Exception as exc:
        failure: BaseException = exc
    except BaseException as exc:
        # pylibjpeg-rle's Rust decoder panics on some corrupt frames: pyo3 raises that as
        # pyo3_runtime.PanicException, a BaseException that `except Exception` misses.
        if not _is_native_panic(exc):
            raise
        failure = exc
    raise DecodeError(
        f"{name}: pixel data cannot be decoded (transfer syntax {transfer_syntax(s.dataset)}): "
        f"{type(failure).__name__}: {failure}",
        series_uid=label,
    ) from failure


def _is_native_panic(exc: BaseException) -> bool:
    kind = type(exc)
    return kind.__name__ == "PanicException" and kind.__module__ in ("pyo3_runtime", "builtins")

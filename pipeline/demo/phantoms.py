"""LNQ-like synthetic CT series with an expert-style reference SEG, written as DICOM.

``lnq demo`` runs the whole job on them without internet, and the tests build their inputs
with them (``tests/support/phantoms.py`` re-exports this module).

A phantom is an axial chest slab: air, a body ellipse of soft tissue, two lungs,
mediastinal fat between them, the aorta, the spine, and lymph nodes as
ellipsoids of known semi-axes inside the mediastinal fat. The reference SEG is
made like IDC's (dcmqi style): one segment 'Mediastinal lymph node', MANUAL,
BINARY, frames only where nodes are. Geometry follows ``pipeline.geometry``:
arrays ``[z, y, x]``, patient LPS in mm.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

UID_ROOT = "1.2.826.0.1.3680043.10.1234."  # a test prefix, deterministic per seed
LYMPH_NODE = hd.sr.CodedConcept("59441001", "SCT", "Lymph node")
ANATOMICAL_STRUCTURE = hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")


@dataclass(frozen=True)
class Ellipsoid:
    """A node: centre in patient LPS mm, semi-axes in mm along x, y, z."""

    center_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        cx, cy, cz = self.center_mm
        a, b, c = self.semi_axes_mm
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1.0


@dataclass
class Phantom:
    """What was written, and the truth to check results against."""

    ct_dir: Path
    seg_path: Path
    patient_id: str
    study_uid: str
    series_uid: str
    seg_series_uid: str
    frame_of_reference_uid: str
    hu: np.ndarray
    mask: np.ndarray
    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    nodes: list[Ellipsoid]
    sop_instance_uids: list[str] = field(default_factory=list)
    annotation: str = "full"
    z_descending: bool = False
    """Rows run to the patient's right (ImageOrientationPatient -1,0,0,0,1,0), so the slice normal
    points to the feet: decoded, slices run from head to feet and columns from left to right."""

    def as_decoded(self, array: np.ndarray) -> np.ndarray:
        """A truth array (``hu``, ``mask``: slices by increasing z, columns by increasing x) in the
        order the CT decoder gives the series (slices along the normal, columns along the rows)."""
        return array[::-1, :, ::-1] if self.z_descending else array

    @property
    def decoded_geometry(self):  # type: ignore[no-untyped-def]
        """The grid the CT decoder gives the series (``pipeline.geometry.Geometry``)."""
        from pipeline.geometry import Geometry

        nz, ny, nx = self.hu.shape
        if not self.z_descending:
            return Geometry((nz, ny, nx), self.origin_mm, self.spacing_mm, (1, 0, 0, 0, 1, 0, 0, 0, 1))
        x0, y0, z0 = self.origin_mm
        dx, _, dz = self.spacing_mm
        origin = (x0 + (nx - 1) * dx, y0, z0 + (nz - 1) * dz)
        return Geometry((nz, ny, nx), origin, self.spacing_mm, (-1, 0, 0, 0, 1, 0, 0, 0, -1))


def default_nodes(z_center_mm: float) -> list[Ellipsoid]:
    """Three separate nodes: a target (short axis 16 mm), a non-target and a normal one."""
    return [
        Ellipsoid((-4.0, -20.0, z_center_mm - 18.0), (11.0, 8.0, 9.0)),
        Ellipsoid((5.0, 10.0, z_center_mm + 2.0), (7.0, 6.0, 7.5)),
        Ellipsoid((-3.0, 30.0, z_center_mm + 22.0), (4.0, 3.5, 4.0)),
    ]


def uid(rng: random.Random) -> str:
    return UID_ROOT + str(rng.randrange(10**20, 10**21))


def make_phantom(
    out_dir: str | os.PathLike[str],
    *,
    patient_id: str = "phantom_001",
    shape_zyx: tuple[int, int, int] = (40, 128, 128),
    pixel_spacing_mm: tuple[float, float] = (1.6, 1.6),
    slice_spacing_mm: float = 2.5,
    nodes: list[Ellipsoid] | None = None,
    seed: int = 0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    signed: bool = True,
    annotation: str = "full",
    write_seg: bool = True,
    noise_sd: float = 8.0,
    anatomy: bool = True,
    patient_name: str | None = None,
    z_descending: bool = False,
) -> Phantom:
    """Write a phantom CT series (one file per slice, shuffled names) and its SEG.

    ``patient_name``: the CT's PatientName (default ``<patient_id>^``, a family name).
    ``z_descending``: rows run to the patient's right, so the decoded slices run from head to feet
    (see :attr:`Phantom.z_descending`); ``hu`` and ``mask`` stay in increasing z and x."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    out = Path(out_dir)
    ct_dir = out / "ct"
    ct_dir.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = shape_zyx
    row_mm, col_mm = pixel_spacing_mm
    origin = (-(nx - 1) * col_mm / 2.0, -(ny - 1) * row_mm / 2.0, -300.0)
    z_center = origin[2] + (nz - 1) * slice_spacing_mm / 2.0
    nodes = default_nodes(z_center) if nodes is None else nodes
    y, x = np.meshgrid(origin[1] + np.arange(ny) * row_mm, origin[0] + np.arange(nx) * col_mm, indexing="ij")
    body = _anatomy(x, y, fov_mm=nx * col_mm, anatomy=anatomy)
    hu = np.empty((nz, ny, nx), dtype=np.int16)
    mask = np.zeros((nz, ny, nx), dtype=bool)
    for k in range(nz):  # slice by slice keeps large phantoms (512 x 512 x 556) cheap
        z = origin[2] + k * slice_spacing_mm
        for node in nodes:
            mask[k] |= node.contains(x, y, np.float64(z))
        values = np.where(mask[k], 40.0, body) + np_rng.normal(0.0, noise_sd, body.shape)
        if not signed:  # 12 stored bits with intercept -1024 cover -1024..3071 HU
            values = np.clip(values, -1024, 3071)
        hu[k] = np.round(values)
    study_uid, series_uid, for_uid = uid(rng), uid(rng), uid(rng)
    datasets = []
    order = list(range(nz))
    rng.shuffle(order)  # instance numbers and file names do not follow position
    for k in range(nz):
        ds = _ct_slice(
            hu[k][:, ::-1] if z_descending else hu[k],
            k=k,
            instance_number=order[k] + 1,
            rng=rng,
            patient_id=patient_id,
            patient_name=f"{patient_id}^" if patient_name is None else patient_name,
            study_uid=study_uid,
            series_uid=series_uid,
            for_uid=for_uid,
            position=(
                origin[0] + (nx - 1) * col_mm if z_descending else origin[0],
                origin[1],
                origin[2] + k * slice_spacing_mm,
            ),
            pixel_spacing_mm=pixel_spacing_mm,
            slice_spacing_mm=slice_spacing_mm,
            signed=signed,
            row_cosine_x=-1 if z_descending else 1,
        )
        datasets.append(ds)
    for ds in datasets:
        written = _encode(ds, transfer_syntax)
        written.save_as(ct_dir / f"{ds.SOPInstanceUID.split('.')[-1]}.dcm", enforce_file_format=True)
    phantom = Phantom(
        ct_dir=ct_dir,
        seg_path=out / "seg" / "seg.dcm",
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        seg_series_uid=uid(rng),
        frame_of_reference_uid=for_uid,
        hu=hu,
        mask=mask,
        origin_mm=origin,
        spacing_mm=(col_mm, row_mm, slice_spacing_mm),
        nodes=nodes,
        sop_instance_uids=[d.SOPInstanceUID for d in datasets],
        annotation=annotation,
        z_descending=z_descending,
    )
    if write_seg:
        write_reference_seg(phantom, datasets, rng=rng)
    return phantom


def _anatomy(x: np.ndarray, y: np.ndarray, *, fov_mm: float, anatomy: bool) -> np.ndarray:
    """In-plane chest anatomy (HU); without it, the nodes (40 HU) sit in fat (-100 HU) alone."""
    f = fov_mm
    hu = np.full(x.shape, -1000.0 if anatomy else -100.0)
    if not anatomy:
        return hu

    def ellipse(cx: float, cy: float, a: float, b: float) -> np.ndarray:
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0

    hu[ellipse(0, 0, 0.46 * f, 0.36 * f)] = -90.0  # subcutaneous fat
    hu[ellipse(0, 0, 0.43 * f, 0.33 * f)] = 45.0  # muscle and wall
    hu[ellipse(-0.22 * f, -0.02 * f, 0.15 * f, 0.24 * f)] = -850.0  # right lung (patient)
    hu[ellipse(0.22 * f, -0.02 * f, 0.15 * f, 0.24 * f)] = -850.0  # left lung
    hu[ellipse(0.0, -0.02 * f, 0.075 * f, 0.24 * f)] = -100.0  # mediastinal fat
    hu[ellipse(0.045 * f, 0.09 * f, 0.028 * f, 0.028 * f)] = 220.0  # descending aorta
    hu[ellipse(0.0, 0.27 * f, 0.05 * f, 0.045 * f)] = 650.0  # vertebral body
    return hu


def _ct_slice(
    pixels: np.ndarray,
    *,
    k: int,
    instance_number: int,
    rng: random.Random,
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    for_uid: str,
    position: tuple[float, float, float],
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float,
    signed: bool,
    row_cosine_x: int = 1,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid(rng)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.SeriesNumber = 2
    ds.InstanceNumber = instance_number
    ds.Manufacturer = "LNQ phantom"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120"
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "FFS"
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [row_cosine_x, 0, 0, 0, 1, 0]
    ds.SliceLocation = f"{position[2]:.4f}"
    ds.SliceThickness = f"{slice_spacing_mm:.4f}"
    ds.PixelSpacing = [f"{v:.4f}" for v in pixel_spacing_mm]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.RescaleType = "HU"
    if signed:
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        stored = pixels.astype(np.int16)
    else:
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        stored = np.clip(pixels.astype(np.int32) + 1024, 0, 4095).astype(np.uint16)
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _encode(ds: Dataset, transfer_syntax: str) -> Dataset:
    if transfer_syntax == ExplicitVRLittleEndian:
        return ds
    out = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_to_bytes(ds)))
    if transfer_syntax == ImplicitVRLittleEndian:
        out.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        return out
    if transfer_syntax == JPEGLosslessSV1:
        return _gdcm_transcode(out, transfer_syntax)
    if transfer_syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        out.compress(transfer_syntax, generate_instance_uid=False)
        return out
    raise ValueError(f"no encoder for transfer syntax {transfer_syntax}")


def _to_bytes(ds: Dataset) -> bytes:
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _gdcm_transcode(ds: Dataset, transfer_syntax: str) -> Dataset:
    """JPEG lossless has no pydicom encoder: let GDCM transcode the file."""
    import tempfile

    import gdcm

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.dcm"), os.path.join(tmp, "out.dcm")
        ds.save_as(src, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(src)
        if not reader.Read():
            raise RuntimeError("GDCM could not read the slice to transcode")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError("GDCM could not encode JPEG lossless")
        writer = gdcm.ImageWriter()
        writer.SetFileName(dst)
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("GDCM could not write the JPEG lossless slice")
        return pydicom.dcmread(dst)


def write_reference_seg(phantom: Phantom, datasets: list[Dataset], *, rng: random.Random) -> Path:
    """An expert-style SEG of the phantom's nodes: one segment, MANUAL, BINARY, empty frames omitted."""
    return write_seg(
        datasets,
        phantom.mask[:, :, ::-1] if phantom.z_descending else phantom.mask,  # as the slices' pixels lie
        phantom.seg_path,
        series_uid=phantom.seg_series_uid,
        rng=rng,
        series_description="Fully Annotated" if phantom.annotation == "full" else "Partially Annotated",
        series_number=2000 if phantom.annotation == "full" else 1000,
    )


def ct_datasets(phantom: Phantom) -> list[Dataset]:
    """The phantom's CT slices, read back and ordered by position (the SEG's frame order)."""
    slices = [pydicom.dcmread(p) for p in phantom.ct_dir.iterdir()]
    return sorted(slices, key=lambda ds: float(ds.ImagePositionPatient[2]))


def write_seg(
    datasets: list[Dataset],
    mask: np.ndarray,
    path: Path,
    *,
    series_uid: str | None = None,
    rng: random.Random | None = None,
    series_description: str = "Prediction",
    series_number: int = 3000,
    algorithm_type: str = "MANUAL",
) -> Path:
    """A BINARY SEG of ``mask`` (``[z, y, x]`` in the order of ``datasets``) with one node segment."""
    rng = rng or random.Random(0)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Mediastinal lymph node",
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=LYMPH_NODE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues[algorithm_type],
        algorithm_identification=(
            hd.AlgorithmIdentificationSequence(
                name="test", version="0", family=codes.cid7162.ArtificialIntelligence
            )
            if algorithm_type == "AUTOMATIC"
            else None
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=series_uid or uid(rng),
        series_number=series_number,
        sop_instance_uid=uid(rng),
        instance_number=1,
        manufacturer="QIICR",
        manufacturer_model_name="https://github.com/QIICR/dcmqi",
        software_versions="phantom",
        device_serial_number="0",
        series_description=series_description,
        content_date=dt.date(2024, 1, 1),
        content_time=dt.time(12, 0),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


__all__ = [
    "Ellipsoid",
    "Phantom",
    "ct_datasets",
    "default_nodes",
    "generate_uid",
    "make_phantom",
    "write_seg",
]

"""Attacks: CT headers without the optional attributes the writers read.

A CT that leaves out ``SliceThickness`` (Type 2: some archives drop it or leave it empty) decoded
and was measured, then failed at ``seg_write``. Which attributes the SEG and SR writers read is
not guessed here: it is recorded while they write (every ``getattr``, ``get`` and ``in`` on the
CT's headers), and each recorded or present attribute that the standard's CT Image IOD makes
Type 2 or 3 (highdicom's tables of the standard) is then removed, and emptied, from every file:
the series must still decode, and its SEG and SR still be written, with what they need from the
CT taken from the decoded geometry."""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.seg_writer import nodes_seg
from pipeline.dicom.sr import nodes_sr
from pipeline.enums import NodeSource
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.geometry import CtVolume
from pipeline.measure.components import label_nodes
from pipeline.measure.nodes import measure_labelled
from pipeline.outcome import SourceNodes
from pipeline.outputs.rows import outcome_rows
from pipeline.process import ProcessConfig, process_series
from pipeline.series_stages import _qc_picture
from tests.support.cohort import cohort_row
from tests.support.phantoms import Ellipsoid, Phantom, make_phantom

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Phantom:
    """Six slices of 40 x 40 with one node: writing its SEG and SR takes milliseconds."""
    z_mid = -300.0 + 2.5 * 2.5
    return make_phantom(
        tmp_path_factory.mktemp("small"),
        shape_zyx=(6, 40, 40),
        nodes=[Ellipsoid((0.0, 0.0, z_mid), (9.0, 8.0, 5.0))],
        anatomy=False,
        noise_sd=0.0,
    )


def _ct_types() -> dict[str, set[str]]:
    """Keyword -> types of the top-level attributes of the CT Image IOD, from the standard."""
    attributes = get_module_attribute_map()
    types: dict[str, set[str]] = {}
    for module in get_iod_module_map()["ct-image"]:
        for attribute in attributes[module["key"]]:
            if not attribute["path"]:
                types.setdefault(attribute["keyword"], set()).add(attribute["type"])
    return types


class _Reads:
    """The keywords whose values are read (``getattr``, ``get``, ``[]``), and those only looked
    for (``in``), on some datasets while the block runs."""

    def __init__(self, datasets: list[pydicom.Dataset]):
        self.watched = {id(ds) for ds in datasets}
        self.used: set[str] = set()
        self.looked_for: set[str] = set()

    def __enter__(self) -> _Reads:
        self._patch = pytest.MonkeyPatch()
        for name in ("__getattr__", "get", "__getitem__"):
            self._patch.setattr(
                pydicom.Dataset, name, self._recording(getattr(pydicom.Dataset, name), self.used)
            )
        contains = pydicom.Dataset.__contains__
        self._patch.setattr(pydicom.Dataset, "__contains__", self._recording(contains, self.looked_for))
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.undo()

    def _recording(self, original, into: set[str]):  # type: ignore[no-untyped-def]
        watched = self.watched

        def wrapper(ds, key, *args, **kwargs):  # type: ignore[no-untyped-def]
            if id(ds) in watched:
                keyword = key if isinstance(key, str) else pydicom.datadict.keyword_for_tag(key)
                if keyword:
                    into.add(keyword)
            return original(ds, key, *args, **kwargs)

        return wrapper


def _write_all(ct: CtVolume, phantom: Phantom) -> tuple[hd.seg.Segmentation, object]:
    labels = label_nodes(phantom.mask, ct.geometry)
    nodes = measure_labelled(labels, ct.geometry, hu=ct.hu)
    seg = nodes_seg(labels, ct, nodes, model_name="m", model_version="1", source=NodeSource.PREDICTION)
    sr = nodes_sr(seg, nodes, ct=ct, model_name="m", model_version="1")
    return seg, sr


OPTIONAL = {"2", "3"}


@pytest.fixture(scope="module")
def optional(small: Phantom) -> dict[str, list[str]]:
    """Type 2 and 3 attributes of the CT (the standard's CT Image IOD) that the SEG and SR writers
    read the value of (``used``), that the phantom's CT carries (``present``; highdicom copies the
    patient and study ones it finds), and both (``all``)."""
    ct = decode_ct_series(str(small.ct_dir))
    headers = [copy.deepcopy(h) for h in ct.headers]
    with _Reads(headers) as reads:
        _write_all(_with_headers(ct, headers), small)
    types = _ct_types()

    def of(keywords: set[str]) -> list[str]:
        return sorted(k for k in keywords if types.get(k) and types[k] <= OPTIONAL)

    present = {element.keyword for element in headers[0] if element.keyword}
    # the recording saw what the bug report names, and more: the patient and study Type 2 values
    assert {"SliceThickness", "PatientID", "PatientSex", "StudyDate", "AccessionNumber"} <= reads.used
    assert {"SpacingBetweenSlices", "LossyImageCompression", "PatientBirthDate"} <= set(of(reads.used))
    return {"used": of(reads.used), "present": of(present), "all": of(reads.used | present)}


def _with_headers(ct: CtVolume, headers: list[pydicom.Dataset]) -> CtVolume:
    return CtVolume(
        hu=ct.hu,
        geometry=ct.geometry,
        series_uid=ct.series_uid,
        study_uid=ct.study_uid,
        frame_of_reference_uid=ct.frame_of_reference_uid,
        patient_id=ct.patient_id,
        sop_instance_uids=ct.sop_instance_uids,
        source_files=ct.source_files,
        headers=tuple(headers),
    )


def _empty(ds: pydicom.Dataset, keyword: str) -> None:
    ds.add_new(pydicom.datadict.tag_for_keyword(keyword), pydicom.datadict.dictionary_VR(keyword), None)


def _stripped_copy(phantom: Phantom, folder: Path, keywords: list[str], *, empty: bool) -> Path:
    """The phantom's CT files with ``keywords`` removed (or present and empty) in every file."""
    folder.mkdir(parents=True)
    for path in phantom.ct_dir.iterdir():
        ds = pydicom.dcmread(path)
        _strip([ds], keywords, empty=empty)
        ds.save_as(folder / path.name)
    return folder


def _strip(headers: list[pydicom.Dataset], keywords: list[str], *, empty: bool) -> None:
    """Remove ``keywords`` from each header (or leave them present and empty)."""
    for ds in headers:
        for keyword in keywords:
            if empty:
                ds.add_new(
                    pydicom.datadict.tag_for_keyword(keyword), pydicom.datadict.dictionary_VR(keyword), None
                )
            elif keyword in ds:
                delattr(ds, keyword)


@pytest.mark.slow
def test_every_optional_attribute_the_writers_read_may_be_absent_or_empty(
    small: Phantom, optional: dict[str, list[str]]
) -> None:
    """One attribute at a time, absent then empty, on the decoded headers (the files' own, which
    the writers reference): every SEG and SR is written, its slice thickness from the geometry."""
    ct = decode_ct_series(str(small.ct_dir))
    failures = []
    for keyword in optional["all"]:
        for empty in (False, True):
            headers = [copy.deepcopy(h) for h in ct.headers]
            _strip(headers, [keyword], empty=empty)
            how = "empty" if empty else "absent"
            try:
                seg, sr = _write_all(_with_headers(ct, headers), small)
            except Exception as exc:  # collected, so that one run names every attribute that fails
                failures.append(f"{keyword} {how}: {type(exc).__name__}: {exc}")
                continue
            measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            assert float(measures.SliceThickness) == pytest.approx(2.5), (keyword, how)
            assert sr is not None and str(seg.LossyImageCompression) in ("00", "01"), (keyword, how)
    assert failures == []


@pytest.mark.parametrize("value", ["0", "-2.5", "1\\2", "nan"])
def test_a_slice_thickness_that_is_not_one_positive_number_comes_from_the_geometry(
    small: Phantom, tmp_path: Path, value: str
) -> None:
    folder = tmp_path / "ct"
    folder.mkdir()
    for path in small.ct_dir.iterdir():
        ds = pydicom.dcmread(path)
        ds["SliceThickness"]._value = value.split("\\") if "\\" in value else value
        ds.save_as(folder / path.name)
    ct = decode_ct_series(str(folder))
    seg, _ = _write_all(ct, small)
    thickness = float(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness)
    assert thickness == pytest.approx(2.5)


def test_the_qc_picture_reads_no_header(small: Phantom) -> None:
    """The QC writer draws from the decoded volume alone: no header attribute can be missing for it."""
    ct = decode_ct_series(str(small.ct_dir))
    labels = label_nodes(small.mask, ct.geometry)
    entry = SourceNodes(NodeSource.REFERENCE, tuple(measure_labelled(labels, ct.geometry, hu=ct.hu)))
    with _Reads(list(ct.headers)) as reads:
        png = _qc_picture(ct, {NodeSource.REFERENCE: labels}, (entry,), title="p  1.2.3")
    assert png.startswith(b"\x89PNG") and reads.used | reads.looked_for == set()


@pytest.mark.parametrize("empty", [False, True], ids=["absent", "empty"])
def test_a_series_without_its_optional_attributes_is_ok_with_valid_seg_and_sr(
    small: Phantom, optional: dict[str, list[str]], tmp_path: Path, empty: bool
) -> None:
    """Through the whole series (decode, measure, SEG, SR, QC): every optional attribute the
    writers read or the CT carries left out, or every one the CT carries left empty (as an
    archive empties its own); the SEG and SR are still valid DICOM (dciodvfy)."""
    keywords = optional["present"] if empty else optional["all"]
    folder = _stripped_copy(small, tmp_path / "ct", keywords, empty=empty)
    row = cohort_row(small, ct_url=str(folder), seg_url=str(small.seg_path))
    stored: dict[str, bytes] = {}

    def sink(kind: str, uid: str, made: str) -> str:
        stored[kind] = Path(made).read_bytes()
        return f"out/{kind}/{uid}"

    config = ProcessConfig(fetch=FetchConfig(endpoint_url="http://127.0.0.1:9", attempts=1))
    rows = outcome_rows(process_series(row, config=config, sink=sink))
    assert rows.series["status"] == "ok", rows.errors
    assert sorted(stored) == ["qc", "seg", "sr"]
    seg = pydicom.dcmread(io.BytesIO(stored["seg"]))
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(2.5)  # the decoded slice spacing
    if DCIODVFY is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed; make test installs it")
    for kind in ("seg", "sr"):
        path = tmp_path / f"{kind}.dcm"
        path.write_bytes(stored[kind])
        done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], kind

"""Attacks on load_series_inputs: the CT and the SEG are fetched at once, and the error
reported must be the right one; in-memory inputs write no arrays."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import inputs
from pipeline.cohort.rows import CohortRow
from pipeline.enums import Stage
from pipeline.errors import FetchError
from pipeline.fetch.s5cmd import FetchConfig
from pipeline.inputs import load_series_inputs

CT_URL = "s3://idc-open-data/ct-prefix/*"
SEG_URL = "s3://idc-open-data/seg-prefix/*"


def _row(ct_url: str = CT_URL, seg_url: str | None = SEG_URL) -> CohortRow:
    return CohortRow(
        patient_id="p",
        study_instance_uid="1.2",
        ct_series_instance_uid="1.2.3",
        ct_series_url=ct_url,
        seg_series_instance_uid=None if seg_url is None else "1.2.4",
        seg_series_url=seg_url,
    )


class _Fetches:
    """A stand-in for fetch_series: per URL, fail, succeed (with a folder) or hang to the deadline."""

    def __init__(self, **behaviour: object) -> None:
        self.behaviour = behaviour
        self.calls: dict[str, dict[str, object]] = {}
        self.ended: dict[str, float] = {}
        self.lock = threading.Lock()

    def __call__(self, url: str, dest: str, *, series_uid: str, expected_count=None, config, deadline):  # type: ignore[no-untyped-def]
        which = "ct" if url == CT_URL else "seg"
        with self.lock:
            self.calls[which] = {
                "dest": dest,
                "deadline": deadline,
                "thread": threading.current_thread().name,
            }
        action = self.behaviour[which]
        try:
            if action == "hang":
                time.sleep(max(0.0, deadline - time.monotonic()))
                raise FetchError(f"{which} fetch timed out", series_uid=series_uid)
            if isinstance(action, float):  # fail after a while
                time.sleep(action)
                raise FetchError(f"{which} failed late", series_uid=series_uid)
            if isinstance(action, str) and action.startswith("fail"):
                raise FetchError(f"{which} {action}", series_uid=series_uid)
            return action
        finally:
            with self.lock:
                self.ended[which] = time.monotonic()


def _load(tmp_path: Path, row: CohortRow, timeout_s: float = 30.0, **kw: object):  # type: ignore[no-untyped-def]
    stages: list[Stage] = []
    result = load_series_inputs(
        report=stages.append,
        row=row,
        folder=str(tmp_path),
        fetch=FetchConfig(timeout_s=timeout_s),
        reference_required=True,
        **kw,  # type: ignore[arg-type]
    )
    return result, stages


def test_ct_fails_while_seg_succeeds_reports_the_ct_error(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake = _Fetches(ct="fail-ct-404", seg=str(tmp_path / "seg"))  # the SEG succeeds
    monkeypatch.setattr(inputs, "fetch_series", fake)
    with pytest.raises(FetchError, match="ct fail-ct-404"):
        _load(tmp_path, _row())
    assert set(fake.calls) == {"ct", "seg"}
    assert fake.calls["seg"]["thread"].startswith("fetch-seg")
    assert fake.calls["ct"]["deadline"] == fake.calls["seg"]["deadline"]  # one shared budget


def test_ct_fails_while_seg_hangs_waits_for_the_seg_and_reports_the_ct_error(
    monkeypatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    fake = _Fetches(ct="fail-ct-early", seg="hang")
    monkeypatch.setattr(inputs, "fetch_series", fake)
    start = time.monotonic()
    with pytest.raises(FetchError, match="ct fail-ct-early") as caught:
        _load(tmp_path, _row(), timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert "seg" not in str(caught.value)
    assert 0.9 <= elapsed < 10.0  # the SEG thread ran to the shared deadline, no further
    assert not any(t.name.startswith("fetch-seg") for t in threading.enumerate())


def test_seg_fails_while_ct_succeeds_reports_the_seg_error(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake = _Fetches(ct=str(tmp_path / "ct"), seg="fail-seg-403")
    monkeypatch.setattr(inputs, "fetch_series", fake)
    monkeypatch.setattr(
        inputs, "decode_ct_series", lambda *a, **k: pytest.fail("no decode after a failed fetch")
    )
    stages: list[Stage] = []
    with pytest.raises(FetchError, match="seg fail-seg-403"):
        load_series_inputs(
            report=stages.append,
            row=_row(),
            folder=str(tmp_path),
            fetch=FetchConfig(timeout_s=30.0),
            reference_required=True,
        )
    assert stages == [Stage.FETCH]


def test_seg_fails_late_after_the_ct_succeeded_reports_the_seg_error(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake = _Fetches(ct=str(tmp_path / "ct"), seg=0.5)
    monkeypatch.setattr(inputs, "fetch_series", fake)
    monkeypatch.setattr(
        inputs, "decode_ct_series", lambda *a, **k: pytest.fail("no decode after a failed fetch")
    )
    with pytest.raises(FetchError, match="seg failed late"):
        _load(tmp_path, _row())
    assert fake.ended["seg"] > fake.ended["ct"]


@pytest.mark.parametrize("seg", ["fail-seg-quick", 0.4])
def test_both_fail_reports_the_ct_error(monkeypatch, tmp_path: Path, seg) -> None:  # type: ignore[no-untyped-def]
    fake = _Fetches(ct=0.1, seg=seg)
    monkeypatch.setattr(inputs, "fetch_series", fake)
    with pytest.raises(FetchError, match="ct failed late"):
        _load(tmp_path, _row())
    assert "seg" in fake.ended  # the SEG fetch was not abandoned mid-way


def test_without_a_seg_only_the_ct_is_fetched(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake = _Fetches(ct="fail-ct-only")
    monkeypatch.setattr(inputs, "fetch_series", fake)
    with pytest.raises(FetchError, match="ct fail-ct-only"):
        _load(tmp_path, _row(seg_url=None))
    assert set(fake.calls) == {"ct"}


def test_seg_and_ct_go_to_their_own_folders(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake = _Fetches(ct="fail-x", seg="fail-y")
    monkeypatch.setattr(inputs, "fetch_series", fake)
    with pytest.raises(FetchError):
        _load(tmp_path, _row())
    assert fake.calls["ct"]["dest"] == os.path.join(str(tmp_path), "ct")
    assert fake.calls["seg"]["dest"] == os.path.join(str(tmp_path), "seg")


@pytest.mark.parametrize("in_memory", [True, False])
def test_local_phantom_in_memory_and_on_disk_agree(phantom, tmp_path: Path, in_memory: bool) -> None:  # type: ignore[no-untyped-def]
    row = CohortRow(
        patient_id=phantom.patient_id,
        study_instance_uid=phantom.study_uid,
        ct_series_instance_uid=phantom.series_uid,
        ct_series_url=str(phantom.ct_dir),
        seg_series_instance_uid=phantom.seg_series_uid,
        seg_series_url=str(phantom.seg_path),
    )
    work = tmp_path / "work"
    work.mkdir()
    result, stages = _load(work, row, in_memory=in_memory)
    assert stages == [Stage.FETCH, Stage.DECODE, Stage.REFERENCE]
    ct, reference = result.load()
    np.testing.assert_array_equal(ct.hu, phantom.hu)
    assert reference is not None
    np.testing.assert_array_equal(reference.astype(bool), phantom.mask.astype(bool))
    written = sorted(os.listdir(work))
    if in_memory:
        assert written == [] and result.hu_path is None and result.reference_path is None
        assert result.ct.hu.size == phantom.hu.size
    else:
        assert written == ["hu.npy", "reference.npy"]
        assert result.ct.hu.size == 0  # no voxels cross to the parent
        # nor headers: the SEG writer of the measuring child reads them from the files (issue 21)
        assert result.ct.headers == () and all(os.path.isfile(f) for f in result.ct.source_files)
    if in_memory:
        assert len(ct.headers) == len(os.listdir(phantom.ct_dir))
        assert all(not hasattr(h, "PixelData") for h in ct.headers)


def test_kept_headers_equal_headers_read_again_and_survive_two_seg_writes(phantom) -> None:  # type: ignore[no-untyped-def]
    """source_headers on the decoder's kept headers (which it edits in place) gives what reading the
    files again gives, and a second call (the other SEG of a series) gives the same again."""
    import dataclasses

    from pipeline.dicom.ct import decode_ct_series
    from pipeline.dicom.seg_writer import source_headers

    ct = decode_ct_series(str(phantom.ct_dir), expected_series_uid=phantom.series_uid)
    files = list(ct.source_files)
    assert len(ct.headers) == len(files) > 1
    assert all("PixelData" not in h for h in ct.headers)
    reread = source_headers(files, dataclasses.replace(ct, headers=()))
    first = source_headers(files, ct)
    second = source_headers(files, ct)
    assert all(a is b for a, b in zip(first, ct.headers, strict=True))  # the kept ones were used
    assert all(a is not b for a, b in zip(reread, ct.headers, strict=True))
    for a, b, c in zip(reread, first, second, strict=True):
        assert a == b == c
        assert a.file_meta == b.file_meta
    assert [str(h.SOPInstanceUID) for h in first] == list(ct.sop_instance_uids)

"""A series' inputs from untrusted bytes: fetch, decode the CT, read the reference SEG.

:func:`load_series_inputs` is what runs in the isolated child process
(:mod:`pipeline.isolation`): it touches every byte that came from a bucket, and
leaves the decoded arrays as ``.npy`` files in the series' work folder, so that
only a small record crosses back to the parent, which maps the arrays from disk (in reference
mode, where the same child measures, they stay in memory).
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pipeline.cohort.rows import CohortRow
from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.reference_seg import read_reference_seg
from pipeline.enums import Stage
from pipeline.errors import ReferenceSegError
from pipeline.fetch.s5cmd import FetchConfig, fetch_series
from pipeline.geometry import CtVolume
from pipeline.stage_clock import StageReporter

_NO_PIXELS = np.empty((0, 0, 0), dtype=np.int16)


@dataclass(frozen=True)
class SeriesInputs:
    """The decoded CT and the reference mask.

    For another process, the voxels are in ``hu_path`` and the mask in ``reference_path``
    (``.npy``) and ``ct`` carries no voxels and no headers (the SEG writer reads those from
    ``ct.source_files``); for this process (``in_memory``), all are here.
    """

    ct: CtVolume
    hu_path: str | None
    reference_path: str | None
    reference: np.ndarray | None = None

    def load(self) -> tuple[CtVolume, np.ndarray | None]:
        """The CT with its voxels and the reference mask (mapped from disk, copy on write, unless
        they are in memory already)."""
        if self.hu_path is None:
            return self.ct, self.reference
        ct = dataclasses.replace(self.ct, hu=np.load(self.hu_path, mmap_mode="c"))
        reference = None if self.reference_path is None else np.load(self.reference_path, mmap_mode="c")
        return ct, reference


def load_series_inputs(
    *,
    report: StageReporter,
    row: CohortRow,
    folder: str,
    fetch: FetchConfig,
    reference_required: bool,
    in_memory: bool = False,
) -> SeriesInputs:
    """Fetch, decode and read the reference of ``row`` into ``folder``; announce each stage.

    ``in_memory``: the arrays are for this process, so they are not written to ``folder``.
    """
    uid = row.ct_series_instance_uid
    report(Stage.FETCH)
    deadline = time.monotonic() + fetch.timeout_s  # one budget for the series' whole fetch, CT and SEG
    # the SEG is fetched while the CT is: each is mostly waiting on the network. A failed CT fetch
    # is the error reported, once the SEG's (bounded by the same deadline) has ended too.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch-seg") as pool:
        seg_fetch = None
        if row.seg_series_url is not None:
            seg_fetch = pool.submit(
                fetch_series,
                row.seg_series_url,
                os.path.join(folder, "seg"),
                series_uid=uid,
                config=fetch,
                deadline=deadline,
            )
        ct_dir = fetch_series(
            row.ct_series_url,
            os.path.join(folder, "ct"),
            series_uid=uid,
            expected_count=row.ct_instance_count,
            config=fetch,
            deadline=deadline,
        )
        seg_dir = None if seg_fetch is None else seg_fetch.result()

    report(Stage.DECODE)
    ct = decode_ct_series(ct_dir, expected_series_uid=uid)
    hu_path = None if in_memory else _saved(os.path.join(folder, "hu.npy"), ct.hu)

    mask = reference_path = None
    if seg_dir is not None:
        report(Stage.REFERENCE)
        mask = read_reference_seg(_single_seg_file(seg_dir, uid), ct)
        reference_path = None if in_memory else _saved(os.path.join(folder, "reference.npy"), mask)
    elif reference_required:
        report(Stage.REFERENCE)
        raise ReferenceSegError(
            "the cohort row has no reference SEG (seg_series_url is null) to measure", series_uid=uid
        )
    if in_memory:
        return SeriesInputs(ct=ct, hu_path=None, reference_path=None, reference=mask)
    return SeriesInputs(  # no headers: the measuring child reads them from the files again, which
        # is quicker than pickling them there and back, and leaves the parent nothing of pydicom's
        ct=dataclasses.replace(ct, hu=_NO_PIXELS, headers=()),
        hu_path=hu_path,
        reference_path=reference_path,
    )


def _saved(path: str, array: np.ndarray) -> str:
    np.save(path, array)
    return path


def _single_seg_file(folder: str, series_uid: str) -> str:
    if os.path.isfile(folder):
        return folder
    files = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    if len(files) != 1:
        raise ReferenceSegError(
            f"expected one reference SEG file, found {len(files)} in {folder}", series_uid=series_uid
        )
    return os.path.join(folder, files[0])

"""Seeded corruptions of a phantom series, and a child-process runner that decodes them.

Each helper copies a phantom's CT folder (and SEG) and flips bytes in one file: in a CT header,
in the SEG header, or in the compressed pixel data of one slice (RLE, JPEG 2000, JPEG-LS phantoms
from ``make_phantom(..., transfer_syntax=...)``). The same seed always gives the same bytes, and
every copy says what it flipped where, so a failing case can be rebuilt exactly.

Native decoders may panic or ``abort()`` the process on corrupt data, so :class:`ForkingRunner`
decodes each copy in a child process (forked from a clean helper that has the pipeline imported
and warm) and reports what became of it: a volume, an error, a crash, or a hang.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

HEADER_START = 132
"""Preamble (128 bytes) and the 'DICM' prefix are not header: flips start after them."""

FLIP_COUNTS = (1, 2, 4, 8, 16)
CODESTREAM_HEAD_BYTES = 256
"""Where a codestream keeps the sizes decoders allocate from (SIZ, SOF, the RLE offsets)."""

VALUE_KEYWORDS = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "RescaleSlope",
    "RescaleIntercept",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)
"""Header values a decoded volume legitimately depends on: a flip that changes one of them may
change the result without anything being wrong."""

GEOMETRY_KEYWORDS = {"ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"}
PIXEL_VALUE_KEYWORDS = {"RescaleSlope", "RescaleIntercept", "BitsStored", "HighBit", "PixelRepresentation"}


@dataclass(frozen=True)
class Corruption:
    """One corrupted copy: which file, which region, which bytes."""

    target: str
    """``ct_header``, ``seg_header`` or ``ct_pixels``."""
    seed: int
    ct_dir: str
    seg_path: str | None
    file: str
    """Path of the corrupted file."""
    original: str
    """Path of the same file before corruption."""
    offsets: tuple[int, ...]
    region: str = "anywhere"
    """For pixel corruption: ``anywhere`` in the fragments or the codestream ``head``."""
    syntax: str = ""
    """Transfer syntax of the corrupted file, by name (for example 'RLE Lossless')."""

    def describe(self) -> str:
        where = f"{Path(self.file).name} bytes {list(self.offsets)}"
        return f"seed {self.seed}: {self.target} ({self.region}) {where}"


def header_span(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Byte range of everything between the 'DICM' prefix and the PixelData element."""
    ds = pydicom.dcmread(path, defer_size=256)
    element = ds.get_item(0x7FE00010, keep_deferred=True)
    tag_and_length = 8 if ds.original_encoding[0] else 12  # implicit VR: tag + length; explicit OB/OW
    return HEADER_START, int(element.value_tell) - tag_and_length


def fragment_spans(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """Byte ranges of the compressed fragments' contents (item headers and offset table left out)."""
    ds = pydicom.dcmread(path, defer_size=256)
    element = ds.get_item(0x7FE00010, keep_deferred=True)
    data = Path(path).read_bytes()
    position = int(element.value_tell)
    spans = []
    while True:
        group, elem, length = struct.unpack("<HHL", data[position : position + 8])
        if (group, elem) != (0xFFFE, 0xE000):
            break
        spans.append((position + 8, position + 8 + length))
        position += 8 + length
    return [s for s in spans[1:] if s[1] > s[0]]


def flip_bytes(
    data: bytearray, spans: Sequence[tuple[int, int]], rng: random.Random, count: int
) -> list[int]:
    """XOR ``count`` distinct bytes within ``spans`` with non-zero values; their offsets, sorted."""
    sizes = [end - start for start, end in spans]
    picks = sorted(rng.sample(range(sum(sizes)), min(count, sum(sizes))))
    chosen = []
    for pick in picks:  # an index into the spans laid end to end, back to a file offset
        for (start, _), size in zip(spans, sizes, strict=True):
            if pick < size:
                chosen.append(start + pick)
                break
            pick -= size
    for p in chosen:
        data[p] ^= rng.randrange(1, 256)
    return chosen


def _copy(ct_dir: Path, seg_path: Path | None, out_dir: Path) -> tuple[Path, Path | None]:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    target_ct = out_dir / "ct"
    shutil.copytree(ct_dir, target_ct)
    target_seg = None
    if seg_path is not None:
        target_seg = out_dir / "seg" / Path(seg_path).name
        target_seg.parent.mkdir(parents=True)
        shutil.copy2(seg_path, target_seg)
    return target_ct, target_seg


def _syntax(path: Path) -> str:
    return str(pydicom.filereader.read_file_meta_info(path).TransferSyntaxUID.name)


def _flip_file(path: Path, spans: Sequence[tuple[int, int]], rng: random.Random) -> tuple[int, ...]:
    data = bytearray(path.read_bytes())
    offsets = flip_bytes(data, spans, rng, rng.choice(FLIP_COUNTS))
    path.write_bytes(bytes(data))
    return tuple(offsets)


def corrupt_ct_header(
    ct_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, seed: int, seg_path: str | None = None
) -> Corruption:
    """A copy of the series with bytes flipped in one slice's header (file meta and dataset)."""
    rng = random.Random(f"ct_header:{seed}")
    ct, seg = _copy(Path(ct_dir), Path(seg_path) if seg_path else None, Path(out_dir))
    victim = rng.choice(sorted(ct.iterdir()))
    syntax = _syntax(victim)
    offsets = _flip_file(victim, [header_span(victim)], rng)
    original = str(Path(ct_dir) / victim.name)
    return Corruption(
        "ct_header", seed, str(ct), str(seg) if seg else None, str(victim), original, offsets, syntax=syntax
    )


def corrupt_seg_header(
    ct_dir: str | os.PathLike[str],
    seg_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    seed: int,
) -> Corruption:
    """A copy of the series whose SEG has bytes flipped in its header (per-frame groups included)."""
    rng = random.Random(f"seg_header:{seed}")
    ct, seg = _copy(Path(ct_dir), Path(seg_path), Path(out_dir))
    assert seg is not None
    syntax = _syntax(seg)
    offsets = _flip_file(seg, [header_span(seg)], rng)
    return Corruption("seg_header", seed, str(ct), str(seg), str(seg), str(seg_path), offsets, syntax=syntax)


def corrupt_ct_pixels(
    ct_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    seed: int,
    region: str = "anywhere",
    seg_path: str | None = None,
) -> Corruption:
    """A copy of a compressed series with bytes flipped in one slice's compressed fragments.

    ``region="head"`` flips only within the first :data:`CODESTREAM_HEAD_BYTES` of the first
    fragment, where codestreams keep the sizes decoders allocate from.
    """
    rng = random.Random(f"ct_pixels:{region}:{seed}")
    ct, seg = _copy(Path(ct_dir), Path(seg_path) if seg_path else None, Path(out_dir))
    victim = rng.choice(sorted(ct.iterdir()))
    spans = fragment_spans(victim)
    if not spans:
        raise ValueError(f"{victim.name} has no compressed fragments: not an encapsulated slice")
    if region == "head":
        start, end = spans[0]
        spans = [(start, min(end, start + CODESTREAM_HEAD_BYTES))]
    syntax = _syntax(victim)
    offsets = _flip_file(victim, spans, rng)
    original = str(Path(ct_dir) / victim.name)
    return Corruption(
        "ct_pixels", seed, str(ct), str(seg) if seg else None, str(victim), original, offsets, region, syntax
    )


def changed_header_values(original: str, corrupted: str) -> list[str]:
    """The :data:`VALUE_KEYWORDS` whose values differ between two files (all when unreadable)."""
    try:
        a = pydicom.dcmread(original, stop_before_pixels=True)
        b = pydicom.dcmread(corrupted, stop_before_pixels=True, force=True)
    except Exception:
        return list(VALUE_KEYWORDS)
    changed = []
    for keyword in VALUE_KEYWORDS:
        try:
            if str(a.get(keyword)) != str(b.get(keyword)):
                changed.append(keyword)
        except Exception:
            changed.append(keyword)
    for keyword in ("TransferSyntaxUID",):
        if str(a.file_meta.get(keyword)) != str(getattr(b, "file_meta", {}).get(keyword)):
            changed.append(keyword)
    return changed


# ---- running a decode in a child process ------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """The clean series' results, saved for children to compare against."""

    hu_path: str
    mask_path: str | None
    sop_instance_uids: tuple[str, ...]
    source_names: tuple[str, ...]
    """File names in slice order (to find which slice a file is)."""
    geometry: tuple[tuple[float, ...], ...]


@dataclass
class Outcome:
    """What became of one corrupted copy."""

    corruption: Corruption
    kind: str
    """``ok``, ``error`` (PipelineError), ``panic`` (escaped BaseException), ``unexpected`` (another
    exception escaped), ``crash`` (killed by a signal or exited without a result), ``hang``."""
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def save_expected(out_dir: str | os.PathLike[str], ct: Any, mask: np.ndarray | None) -> Expected:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "hu.npy", ct.hu)
    mask_path = None
    if mask is not None:
        np.save(out / "mask.npy", mask)
        mask_path = str(out / "mask.npy")
    g = ct.geometry
    return Expected(
        hu_path=str(out / "hu.npy"),
        mask_path=mask_path,
        sop_instance_uids=tuple(ct.sop_instance_uids),
        source_names=tuple(Path(p).name for p in ct.source_files),
        geometry=(tuple(g.size_zyx), tuple(g.origin_mm), tuple(g.spacing_mm), tuple(g.direction)),
    )


def _child(corruption: Corruption, expected: Expected, result_path: str) -> None:
    """Runs in the child: decode (and read the SEG), compare, write the result as JSON."""
    from pipeline.dicom.ct import decode_ct_series
    from pipeline.dicom.reference_seg import read_reference_seg
    from pipeline.errors import PipelineError

    result: dict[str, Any]
    try:
        ct = decode_ct_series(corruption.ct_dir)
        detail: dict[str, Any] = {}
        hu = np.load(expected.hu_path)
        g = ct.geometry
        geometry = (tuple(g.size_zyx), tuple(g.origin_mm), tuple(g.spacing_mm), tuple(g.direction))
        detail["geometry_equal"] = bool(
            geometry[0] == expected.geometry[0]
            and all(
                np.allclose(a, b, rtol=0, atol=1e-6)
                for a, b in zip(geometry[1:], expected.geometry[1:], strict=True)
            )
        )
        detail["finite"] = bool(np.isfinite(ct.hu).all())
        detail["hu_range"] = [float(np.min(ct.hu)), float(np.max(ct.hu))] if ct.hu.size else []
        detail["uids_equal"] = tuple(ct.sop_instance_uids) == expected.sop_instance_uids
        if ct.hu.shape == hu.shape:
            differing = np.flatnonzero((ct.hu != hu).reshape(len(hu), -1).any(axis=1))
            detail["differing_slices"] = [expected.source_names[i] for i in differing]
        else:
            detail["differing_slices"] = None
        if corruption.seg_path is not None and expected.mask_path is not None:
            mask = read_reference_seg(corruption.seg_path, ct)
            detail["mask_equal"] = bool(np.array_equal(mask, np.load(expected.mask_path)))
        result = {"kind": "ok", "detail": detail}
    except PipelineError as exc:
        result = {"kind": "error", "detail": {"type": type(exc).__name__, "message": str(exc)}}
    except Exception as exc:
        result = {"kind": "unexpected", "detail": {"type": type(exc).__name__, "message": str(exc)}}
    except BaseException as exc:  # a native panic that escaped (pyo3_runtime.PanicException)
        result = {"kind": "panic", "detail": {"type": type(exc).__name__, "message": str(exc)}}
    Path(result_path).write_text(json.dumps(result))


class ForkingRunner:
    """Decodes corrupted copies in child processes forked from one warm, clean helper.

    The helper is spawned (a fresh interpreter: none of the parent's threads, which a plain fork
    would copy half of), imports the pipeline and decodes a clean series once, so the lazy caches
    a first read fills (highdicom loads the standard's module tables, about 0.5 s) are filled
    before each case's child is forked from it. A child that panics, aborts or hangs is reported
    by the helper, which outlives it. Use as a context manager.
    """

    def __init__(
        self, warm_ct_dir: str | os.PathLike[str], warm_seg_path: str | os.PathLike[str] | None
    ) -> None:
        self._warm = (str(warm_ct_dir), str(warm_seg_path) if warm_seg_path else None)
        self._conn: Any = None
        self._process: Any = None

    def __enter__(self) -> ForkingRunner:
        context = multiprocessing.get_context("spawn")
        self._conn, their_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(their_end, *self._warm), daemon=True)
        self._process.start()
        their_end.close()
        if self._conn.recv() != "ready":
            raise RuntimeError("the fuzz helper process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()

    def run(self, corruption: Corruption, expected: Expected, *, timeout_s: float = 20.0) -> Outcome:
        """Decode one corrupted copy in a child; a crash or a hang is reported, not suffered."""
        start = time.perf_counter()
        self._conn.send((corruption, expected, timeout_s))
        kind, detail = self._conn.recv()
        return Outcome(corruption, kind, detail, time.perf_counter() - start)


def _serve(conn: Any, warm_ct_dir: str, warm_seg_path: str | None) -> None:
    """The helper: warm up, then fork one child per request and report what became of it."""
    from pipeline.dicom.ct import decode_ct_series
    from pipeline.dicom.reference_seg import read_reference_seg

    ct = decode_ct_series(warm_ct_dir)
    if warm_seg_path:
        read_reference_seg(warm_seg_path, ct)
    conn.send("ready")
    while (request := conn.recv()) is not None:
        corruption, expected, timeout_s = request
        conn.send(_fork_one(corruption, expected, timeout_s))


def _fork_one(corruption: Corruption, expected: Expected, timeout_s: float) -> tuple[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="lnq-fuzz-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        pid = os.fork()
        if pid == 0:  # the child: never returns into the helper's loop
            code = 0
            try:
                os.environ["RUST_BACKTRACE"] = "0"  # a panic's backtrace takes longer than the decode
                _child(corruption, expected, result_path)
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        deadline = time.monotonic() + timeout_s
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "hang", {"timeout_s": timeout_s}
            time.sleep(0.002)
        if os.path.exists(result_path):
            result = json.loads(Path(result_path).read_text())
            return result["kind"], result["detail"]
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            return "crash", {"signal": signal.Signals(number).name, "exitcode": -number}
        return "crash", {"exitcode": os.waitstatus_to_exitcode(status)}


def judge(outcome: Outcome, expected: Expected) -> str | None:
    """Why an outcome is not allowed, or None when it is.

    Allowed: an error with a message; a crash of the child (the job isolates those); a volume
    equal to the original except where the corruption could change it. A flipped byte in pixel
    data may change that slice (DICOM carries no checksum to tell), but its HU must stay finite
    and every other slice must be exact; a flipped header value may change what it describes.
    """
    c, d = outcome.corruption, outcome.detail
    if outcome.kind in ("hang", "unexpected"):
        return f"{outcome.kind}: {d}"
    if outcome.kind == "error":
        return None if d.get("message") else "an error without a message"
    if outcome.kind in ("crash", "panic"):
        return None
    if not d["finite"]:
        return f"ok with non-finite HU {d['hu_range']}"
    if d.get("mask_equal") is False:
        return "ok with a reference mask that differs from the original"
    if c.target == "seg_header":
        return None if d["differing_slices"] == [] and d["geometry_equal"] else f"CT changed: {d}"
    victim = Path(c.file).name
    untouched = d["differing_slices"] is not None and set(d["differing_slices"]) <= {victim}
    if c.target == "ct_pixels":
        if d["geometry_equal"] and d["uids_equal"] and untouched:
            return None
        return f"pixel corruption of {victim} changed more than that slice: {d}"
    # ct_header: a result equal to the original, or one a changed header value explains
    if d["geometry_equal"] and d["uids_equal"] and d["differing_slices"] == []:
        return None
    changed = set(changed_header_values(c.original, c.file))
    moved = bool(GEOMETRY_KEYWORDS & changed)  # a moved or re-spaced slice may reorder the stack
    if not d["geometry_equal"] or d["differing_slices"] is None or set(d["differing_slices"]) - {victim}:
        explained = moved
    else:
        explained = victim not in d["differing_slices"] or bool((PIXEL_VALUE_KEYWORDS & changed) or moved)
    if not d["uids_equal"]:
        explained = explained and bool(({"SOPInstanceUID"} & changed) or moved)
    if explained:
        return None
    return (
        f"header corruption of {victim} changed the result, no changed value explains it: "
        f"{d} (changed {sorted(changed)})"
    )


def outcome_label(outcome: Outcome) -> str:
    """A short name for an outcome, for tallies: ``ok (identical)``, ``ok (slice differs)``,
    ``error``, ``error (panic)`` (a panic the decoder turned into an error), ``crash (SIGABRT)``..."""
    d = outcome.detail
    if outcome.kind == "ok":
        changed = d.get("differing_slices") != [] or d.get("mask_equal") is False
        return "ok (slice differs)" if changed else "ok (identical)"
    if outcome.kind == "error" and "PanicException" in d.get("message", ""):
        return "error (panic)"
    if outcome.kind == "crash":
        return f"crash ({d.get('signal', d.get('exitcode'))})"
    return outcome.kind


def summarise(outcomes: Sequence[Outcome]) -> dict[str, dict[str, int]]:
    """Counts of :func:`outcome_label` per target and transfer syntax."""
    table: dict[str, dict[str, int]] = {}
    for outcome in outcomes:
        group = f"{outcome.corruption.target} / {outcome.corruption.syntax}"
        counts = table.setdefault(group, {})
        label = outcome_label(outcome)
        counts[label] = counts.get(label, 0) + 1
    return table


def as_dict(outcome: Outcome) -> dict[str, Any]:
    return {"corruption": asdict(outcome.corruption), "kind": outcome.kind, "detail": outcome.detail}

"""Seeded fuzz of CT decode and reference SEG reading: corrupt bytes never hang or give a wrong ok.

Each corrupted copy (``tests/support/fuzz.py``) is decoded in a child process, because native
decoders may panic or ``abort()``: a crashed child is an allowed outcome here (the job isolates
series and turns it into an error row). Allowed: an error with a message, a crash, or a volume
equal to the original except where the corruption could change it. Never: a hang (each case has
a timeout), an exception outside the pipeline's error family, or an ok with non-finite HU, a
changed mask, or changes the corruption cannot explain. 60 cases, about 10 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from pipeline.dicom.ct import decode_ct_series
from pipeline.dicom.reference_seg import read_reference_seg
from tests.support import fuzz
from tests.support.phantoms import make_phantom

CASES_PER_GROUP = 12
CASE_TIMEOUT_S = 20.0
SHAPE_ZYX = (6, 64, 64)
CODECS = {"RLE": RLELossless, "JPEG 2000": JPEG2000Lossless, "JPEG-LS": JPEGLSLossless}


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, fuzz.Expected]]:
    """Clean phantoms (one native with its SEG, one per codec) and their decoded results."""
    root = tmp_path_factory.mktemp("fuzz")
    built: dict[str, tuple[object, fuzz.Expected]] = {}
    native = make_phantom(root / "native", shape_zyx=SHAPE_ZYX, seed=11)
    ct = decode_ct_series(str(native.ct_dir))
    built["native"] = (
        native,
        fuzz.save_expected(root / "native-expected", ct, read_reference_seg(str(native.seg_path), ct)),
    )
    for i, (name, syntax) in enumerate(CODECS.items()):
        p = make_phantom(
            root / name,
            shape_zyx=SHAPE_ZYX,
            transfer_syntax=syntax,
            seed=12 + i,
            write_seg=False,
            signed=i != 2,
        )
        built[name] = (
            p,
            fuzz.save_expected(root / f"{name}-expected", decode_ct_series(str(p.ct_dir)), None),
        )
    return built


@pytest.fixture(scope="module")
def runner(series) -> Iterator[fuzz.ForkingRunner]:
    phantom, _ = series["native"]
    with fuzz.ForkingRunner(phantom.ct_dir, phantom.seg_path) as forking:
        yield forking


def _run(
    runner: fuzz.ForkingRunner, corruptions: list[fuzz.Corruption], expected: fuzz.Expected
) -> list[fuzz.Outcome]:
    outcomes = [runner.run(c, expected, timeout_s=CASE_TIMEOUT_S) for c in corruptions]
    for name, counts in fuzz.summarise(outcomes).items():
        print(f"{name}: {dict(sorted(counts.items()))}")
    problems = [f"{o.corruption.describe()}: {why}" for o in outcomes if (why := fuzz.judge(o, expected))]
    assert not problems, "\n".join(problems)
    return outcomes


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("codec", list(CODECS))
def test_corrupt_compressed_pixels(codec: str, series, runner, tmp_path: Path) -> None:
    """Flipped bytes in one slice's codestream: half anywhere, half in the first 256 bytes."""
    phantom, expected = series[codec]
    corruptions = [
        fuzz.corrupt_ct_pixels(
            phantom.ct_dir, tmp_path / f"case{seed}", seed=seed, region="head" if seed % 2 else "anywhere"
        )
        for seed in range(CASES_PER_GROUP)
    ]
    outcomes = _run(runner, corruptions, expected)
    assert any(o.kind != "ok" or o.detail["differing_slices"] for o in outcomes), "no flip changed anything"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_corrupt_ct_headers(series, runner, tmp_path: Path) -> None:
    """Flipped bytes in one slice's header (file meta included); its SEG is read too."""
    phantom, expected = series["native"]
    corruptions = [
        fuzz.corrupt_ct_header(
            phantom.ct_dir, tmp_path / f"case{seed}", seed=seed, seg_path=str(phantom.seg_path)
        )
        for seed in range(CASES_PER_GROUP)
    ]
    outcomes = _run(runner, corruptions, expected)
    assert any(o.kind == "error" for o in outcomes)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_corrupt_seg_headers(series, runner, tmp_path: Path) -> None:
    """Flipped bytes in the SEG header (frame counts, per-frame references, segment descriptions)."""
    phantom, expected = series["native"]
    corruptions = [
        fuzz.corrupt_seg_header(phantom.ct_dir, phantom.seg_path, tmp_path / f"case{seed}", seed=seed)
        for seed in range(CASES_PER_GROUP)
    ]
    outcomes = _run(runner, corruptions, expected)
    assert any(o.kind == "error" for o in outcomes)


def test_corruptions_are_reproducible(series, tmp_path: Path) -> None:
    phantom, _ = series["RLE"]
    a = fuzz.corrupt_ct_pixels(phantom.ct_dir, tmp_path / "a", seed=5, region="head")
    b = fuzz.corrupt_ct_pixels(phantom.ct_dir, tmp_path / "b", seed=5, region="head")
    assert (Path(a.file).name, a.offsets) == (Path(b.file).name, b.offsets)
    assert Path(a.file).read_bytes() == Path(b.file).read_bytes() != Path(a.original).read_bytes()

"""Seconds and bytes of the per-node SEG and the TID 1500 SR for one series, on LNQ-sized phantoms.

For each size (512 x 512 x 108 slices, LNQ's median, and 512 x 512 x 556, its largest), a
phantom CT with 9 nodes (as ``bench/pipeline_stages.py`` makes it) is written as DICOM,
decoded, labelled and measured (not timed: those are earlier stages), then timed, best of
``--repeat``:

- ``headers_s``: reading the CT headers the SEG references (``source_headers``);
- ``seg_s``: building the per-node SEG from those headers plus encoding it to bytes;
- ``sr_s``: building the SR from the SEG plus encoding it to bytes;
- the same SEG as LABELMAP, for the choice between the two (``labelmap_*``).

    .venv/bin/python -m bench.dicom_writing [--sizes 108 556] [--repeat 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import lnq_sized_phantom, machine


def _best(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def one_size(work: Path, n_slices: int, repeat: int) -> dict[str, Any]:
    from pipeline.dicom.ct import decode_ct_series
    from pipeline.dicom.seg_writer import nodes_seg, seg_bytes, source_headers
    from pipeline.dicom.sr import nodes_sr, sr_bytes
    from pipeline.measure.components import label_nodes
    from pipeline.measure.nodes import measure_labelled

    phantom = lnq_sized_phantom(work / f"p{n_slices}", n_slices, write_seg=False)
    ct = decode_ct_series(str(phantom.ct_dir))
    labels = label_nodes(phantom.mask, ct.geometry)
    nodes = measure_labelled(labels, ct.geometry, hu=ct.hu)
    kw = {"model_name": "tiny-conv", "model_version": "1"}

    headers_s, headers = _best(repeat, lambda: source_headers(list(ct.source_files), ct))
    seg_s, seg_data = _best(repeat, lambda: seg_bytes(nodes_seg(labels, ct, nodes, headers=headers, **kw)))
    seg = nodes_seg(labels, ct, nodes, headers=headers, **kw)
    sr_s, sr_data = _best(repeat, lambda: sr_bytes(nodes_sr(seg, nodes, ct=ct, **kw)))  # type: ignore[arg-type]
    labelmap_s, labelmap_data = _best(
        repeat,
        lambda: seg_bytes(nodes_seg(labels, ct, nodes, headers=headers, segmentation_type="LABELMAP", **kw)),
    )
    return {
        "slices": n_slices,
        "nodes": len(nodes),
        "headers_s": round(headers_s, 3),
        "seg_s": round(seg_s, 3),
        "sr_s": round(sr_s, 3),
        "total_s": round(headers_s + seg_s + sr_s, 3),
        "seg_bytes": len(seg_data),
        "seg_frames": int(seg.NumberOfFrames),
        "sr_bytes": len(sr_data),
        "labelmap_seg_s": round(labelmap_s, 3),
        "labelmap_seg_bytes": len(labelmap_data),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[108, 556])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", help="folder for the phantoms (default: a temporary one)")
    args = parser.parse_args(argv)
    print(json.dumps({"machine": machine()}))
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for n in args.sizes:
            print(json.dumps(one_size(Path(tmp), n, args.repeat)), flush=True)


if __name__ == "__main__":
    main()

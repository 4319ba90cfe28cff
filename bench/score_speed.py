"""Seconds to score one large series, next to issue 11's goal of 3 s.

Builds masks like the 556-slice phantom's in model mode (512 x 512 x 556 voxels of
0.78 x 0.78 x 1.25 mm): a reference of 9 ellipsoid nodes and a prediction of about
680 nodes, most of them small random blobs scattered over the whole volume (as the
tiny random model predicts), some ellipsoids overlapping the reference nodes. Then
times scoring as ``pipeline/process.py`` calls it: ``score_case`` on the two masks
made SimpleITK images, plus ``detect`` on the node labels (labelling belongs to the
measurement stage and is not timed).

    .venv/bin/python -m bench.score_speed [--slices 556] [--blobs 680] [--repeat 3] [--compare]

``--compare`` also runs the challenge's own SimpleITK code (LabelContour surfaces, float32
``SignedMaurerDistanceMap`` over the whole image), the code this replaced, and prints how
far its scores are from the fast path's (float32 rounding only) and how long it took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.harness import machine

GOAL_S = 3.0
SPACING_XYZ = (0.78, 0.78, 1.25)


def _ellipsoid(mask: np.ndarray, centre_zyx: np.ndarray, semi_zyx: np.ndarray) -> None:
    """Set the voxels of one ellipsoid (semi-axes in voxels), touching only its bounding box."""
    low = np.maximum(np.floor(centre_zyx - semi_zyx).astype(int), 0)
    high = np.minimum(np.ceil(centre_zyx + semi_zyx).astype(int) + 1, mask.shape)
    if np.any(high <= low):
        return
    z, y, x = np.ogrid[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    inside = (
        ((z - centre_zyx[0]) / semi_zyx[0]) ** 2
        + ((y - centre_zyx[1]) / semi_zyx[1]) ** 2
        + ((x - centre_zyx[2]) / semi_zyx[2]) ** 2
    ) <= 1.0
    mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]] |= inside


def make_masks(n_slices: int, n_blobs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) bool ``[z, y, x]`` masks."""
    rng = np.random.default_rng(seed)
    shape = (n_slices, 512, 512)
    spacing_zyx = np.asarray(SPACING_XYZ[::-1])
    reference = np.zeros(shape, bool)
    prediction = np.zeros(shape, bool)
    centre = (np.asarray(shape) - 1) / 2.0
    for i in range(9):  # reference nodes: 8 to 26 mm across, along the mediastinum
        offset_mm = np.array([(i - 4) * 22.0, -30.0 + (i % 5) * 15.0, -8.0 + (i % 3) * 8.0])
        semi_mm = np.array([4.0 + (i % 4) * 2.5, 0.8 * (4.0 + (i % 4) * 2.5), 4.0 + (i % 4) * 2.5])
        node_centre = centre + offset_mm / spacing_zyx
        _ellipsoid(reference, node_centre, semi_mm / spacing_zyx)
        if i % 3 != 2:  # two in three found, shifted by a few voxels and a little larger
            shift = rng.uniform(-3, 3, 3)
            _ellipsoid(prediction, node_centre + shift, 1.1 * semi_mm / spacing_zyx)
    for _ in range(n_blobs):  # noise: mostly a few to a few hundred voxels, rarely thousands
        semi_vox = rng.lognormal(mean=0.3, sigma=0.55, size=3) * np.array([0.6, 1.0, 1.0])
        if rng.random() < 0.01:
            semi_vox *= 6.0
        _ellipsoid(prediction, rng.uniform(0, np.asarray(shape) - 1), np.maximum(semi_vox, 0.5))
    return prediction, reference


def challenge_score(prediction, reference):  # type: ignore[no-untyped-def]
    """The LNQ2023 challenge's own code (SimpleITK), for --compare."""
    import SimpleITK as sitk

    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(reference, prediction)
    p_surface, r_surface = sitk.LabelContour(prediction), sitk.LabelContour(reference)

    def distances(surface):  # type: ignore[no-untyped-def]
        mm = sitk.SignedMaurerDistanceMap(surface, squaredDistance=False, useImageSpacing=True)
        return np.abs(sitk.GetArrayFromImage(mm).astype(np.float64))

    to_r = distances(r_surface)[sitk.GetArrayViewFromImage(p_surface) > 0]
    to_p = distances(p_surface)[sitk.GetArrayViewFromImage(r_surface) > 0]
    return float(overlap.GetDiceCoefficient()), float(to_r.mean() / 2 + to_p.mean() / 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=556)
    parser.add_argument("--blobs", type=int, default=700, help="random blobs to scatter (some merge)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--compare", action="store_true", help="also time the challenge's SimpleITK code")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args()

    from pipeline.evaluate.detection import detect
    from pipeline.evaluate.lnq2023 import score_case
    from pipeline.geometry import Geometry, mask_to_sitk
    from pipeline.measure.components import label_nodes

    start = time.perf_counter()
    prediction, reference = make_masks(args.slices, args.blobs)
    geometry = Geometry(
        size_zyx=prediction.shape,
        origin_mm=(-199.29, -199.29, -300.0),
        spacing_mm=SPACING_XYZ,
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    pred_labels, ref_labels = label_nodes(prediction, geometry), label_nodes(reference, geometry)
    ref_short = {i: 12.0 for i in range(1, int(ref_labels.max()) + 1)}
    setup_s = time.perf_counter() - start

    seconds = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        score = score_case(mask_to_sitk(prediction, geometry), mask_to_sitk(reference, geometry))
        detection = detect(pred_labels, ref_labels, ref_short_axis_mm=ref_short, fully_annotated=True)
        seconds.append(time.perf_counter() - start)
    best = min(seconds)
    result = {
        "shape_zyx": list(prediction.shape),
        "predicted_nodes": int(pred_labels.max()),
        "predicted_voxels": int(prediction.sum()),
        "reference_nodes": int(ref_labels.max()),
        "setup_s": round(setup_s, 2),
        "score_s": [round(s, 3) for s in seconds],
        "score_best_s": round(best, 3),
        "goal_s": GOAL_S,
        "dsc": score.dsc,
        "assd_mm": score.assd_mm,
        "detected_ge_10mm": detection.n_detected_short_axis_ge_10mm,
        "false_positive_nodes": detection.n_false_positive_nodes,
    }
    if args.compare:
        start = time.perf_counter()
        dsc, assd = challenge_score(mask_to_sitk(prediction, geometry), mask_to_sitk(reference, geometry))
        result["challenge_code_s"] = round(time.perf_counter() - start, 3)
        result["challenge_dsc_difference"] = abs(dsc - score.dsc)
        result["challenge_assd_relative_difference"] = abs(assd - score.assd_mm) / assd
    result["machine"] = machine()
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    verdict = "meets" if best <= GOAL_S else "MISSES"
    print(
        f"scoring ({result['predicted_nodes']} predicted nodes, {args.slices} slices): "
        f"{best:.2f} s, goal {GOAL_S:.0f} s: {verdict} the goal"
    )


if __name__ == "__main__":
    main()

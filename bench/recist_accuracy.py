"""Measure the error of the RECIST long and short axes on analytic shapes, and print it.

Rotated ellipses at anisotropic pixel spacing (up to 1.5:1) and ellipsoids on
CT-like grids (slice spacing 1, 2.5 or 5 mm), rasterised at voxel centres. The
truth is the analytic diameter (ellipses) or the analytic cross-section on the
slice the method chose (ellipsoids). A pixel is the larger in-plane spacing.
The largest 3D diameter is checked on ellipsoids against twice the longest
semi-axis (in plane or along z); its error is also given in slices.

    .venv/bin/python -m bench.recist_accuracy [--ellipses N] [--ellipsoids N] [--diameters N]
"""

from __future__ import annotations

import argparse
import json
import time

from bench.harness import describe_machine
from tests.support.analytic_shapes import (
    diameter_errors,
    diameter_summary,
    ellipse_errors,
    ellipsoid_errors,
    summary,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ellipses", type=int, default=1000)
    parser.add_argument("--ellipsoids", type=int, default=200)
    parser.add_argument("--diameters", type=int, default=300, help="ellipsoids for the 3D diameter")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    start = time.perf_counter()
    results = {
        "machine": describe_machine(),
        "ellipses": {"n": args.ellipses, **summary(ellipse_errors(args.ellipses, seed=args.seed))},
        "ellipsoids": {
            "n": args.ellipsoids,
            **summary(ellipsoid_errors(args.ellipsoids, seed=args.seed + 1)),
        },
        "diameter_3d": {
            "n": args.diameters,
            **diameter_summary(diameter_errors(args.diameters, seed=args.seed + 2)),
        },
    }
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results, indent=2))
    for shape in ("ellipses", "ellipsoids"):
        r = results[shape]
        print(
            f"{shape:10s} n={r['n']:5d}  long: worst {r['long_worst_mm']:.3f} mm "
            f"({r['long_worst_px']:.2f} px), mean {r['long_mean_mm']:.3f} mm ({r['long_mean_px']:.2f} px)"
            f"  short: worst {r['short_worst_mm']:.3f} mm ({r['short_worst_px']:.2f} px), "
            f"mean {r['short_mean_mm']:.3f} mm ({r['short_mean_px']:.2f} px)"
        )
    d = results["diameter_3d"]
    for key in ["all"] + sorted(
        k[: -len("_worst_mm")] for k in d if k.startswith("slice_") and k.endswith("_worst_mm")
    ):
        worst, slices = d[key + "_worst_mm"], d[key + "_worst_slices"]
        print(
            f"3D diameter {key:12s} worst {worst:.3f} mm ({slices:.2f} slices), "
            f"mean {d[key + '_mean_mm']:+.3f} mm, mean abs {d[key + '_mean_abs_mm']:.3f} mm"
        )


if __name__ == "__main__":
    main()

"""Cohort aggregates of per-case scores, with the challenge's ranking convention labelled."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def aggregate_scores(dsc: Sequence[float], assd_mm: Sequence[float]) -> dict[str, float | int | None]:
    """Mean and median DSC and ASSD over cases.

    ``assd_mm_mean``/``_median`` leave NaN cases (empty predictions) out;
    ``assd_mm_*_nan_as_max`` replace them by the cohort's largest ASSD, as the
    LNQ2023 ranking did. DSC counts empty predictions as 0, as scored.
    """
    if len(dsc) != len(assd_mm):
        raise ValueError(f"{len(dsc)} DSC values but {len(assd_mm)} ASSD values")
    d = np.asarray(dsc, dtype=float)
    a = np.asarray(assd_mm, dtype=float)
    finite = a[~np.isnan(a)]
    worst = float(finite.max()) if finite.size else math.nan
    ranked = np.where(np.isnan(a), worst, a)

    def stat(values: np.ndarray, fn: Callable[[np.ndarray], Any]) -> float | None:
        return float(fn(values)) if values.size and not np.all(np.isnan(values)) else None

    return {
        "n_cases": int(d.size),
        "n_assd_nan": int(np.isnan(a).sum()),
        "dsc_mean": stat(d, np.mean),
        "dsc_median": stat(d, np.median),
        "assd_mm_mean": stat(finite, np.mean),
        "assd_mm_median": stat(finite, np.median),
        "assd_mm_mean_nan_as_max": stat(ranked, np.mean),
        "assd_mm_median_nan_as_max": stat(ranked, np.median),
    }

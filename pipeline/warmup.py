"""Warm the fork server: first-use costs paid once, not again in every isolated child.

Importing this module (the fork server preloads it, see :mod:`pipeline.isolation`) loads
highdicom's tables of the DICOM standard (it reads them lazily, on the first SEG it parses:
0.4 s, paid by every child without this) and draws a tiny figure with the Agg backend, so
matplotlib's font cache and text layout are loaded before any series' child is forked.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure


def warm_highdicom() -> None:
    try:
        from highdicom import _standard_utils
    except ImportError:  # a highdicom without the module: nothing to warm
        return
    for name in ("get_module_attribute_map", "get_iod_module_map"):
        loader = getattr(_standard_utils, name, None)
        if callable(loader):
            loader()


def warm_matplotlib() -> None:
    figure = Figure(figsize=(1, 1), dpi=10)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1])
    axes.text(0.5, 0.5, "L 1.0 mm")
    axes.set_title("warm")
    figure.savefig(io.BytesIO(), format="png")


warm_highdicom()
warm_matplotlib()

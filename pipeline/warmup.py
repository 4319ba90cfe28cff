"""Warm the fork server: first-use costs paid once, not again in every isolated child.

Importing this module (the fork server preloads it, see :mod:`pipeline.isolation`) loads
highdicom's tables of the DICOM standard (it reads them lazily, on the first SEG it parses:
0.4 s, paid by every child without this) and draws a tiny figure with the Agg backend, so
matplotlib's font cache and text layout are loaded before any series' child is forked; then
it freezes what is loaded out of the garbage collector's reach (see :func:`freeze_what_is_loaded`).
"""

from __future__ import annotations

import gc
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


def freeze_what_is_loaded() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    The fork server holds about 400,000 objects after its preload (the libraries, highdicom's
    tables); without this every full collection in every child walks all of them again (and
    touches their pages, which the child then copies). What the preload made lives as long as
    the server anyway. Python's documentation recommends it before forking."""
    gc.collect()
    gc.freeze()


warm_highdicom()
warm_matplotlib()
freeze_what_is_loaded()

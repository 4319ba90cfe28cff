"""Quality-control pictures: what a reader looks at to trust (or doubt) a series' results."""

from __future__ import annotations

from pipeline.qc.orientation import direction_letters, physical_to_index, screen_letters
from pipeline.qc.picture import Panel, QcPicture, nodes_for_qc, qc_png, render_qc

__all__ = [
    "Panel",
    "QcPicture",
    "direction_letters",
    "nodes_for_qc",
    "physical_to_index",
    "qc_png",
    "render_qc",
    "screen_letters",
]

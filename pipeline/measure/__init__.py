"""Node measurements on masks placed on the CT grid.

The names below are loaded on first use (as in :mod:`pipeline.dicom`), so that importing one
module of the package does not import all of them.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "AxialAxes": "pipeline.measure.recist",
    "Burden": "pipeline.measure.burden",
    "NodeMeasurement": "pipeline.measure.nodes",
    "NodeQuality": "pipeline.measure.quality",
    "RecistCategory": "pipeline.measure.categories",
    "label_nodes": "pipeline.measure.components",
    "max_diameter_3d": "pipeline.measure.diameter3d",
    "measure_nodes": "pipeline.measure.nodes",
    "node_quality": "pipeline.measure.quality",
    "recist_axes": "pipeline.measure.recist",
    "recist_category": "pipeline.measure.categories",
    "series_burden": "pipeline.measure.burden",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

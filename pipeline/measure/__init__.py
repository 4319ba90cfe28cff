"""Node measurements on masks placed on the CT grid."""

from pipeline.measure.burden import Burden, series_burden
from pipeline.measure.categories import RecistCategory, recist_category
from pipeline.measure.components import label_nodes
from pipeline.measure.diameter3d import max_diameter_3d
from pipeline.measure.nodes import NodeMeasurement, measure_nodes
from pipeline.measure.recist import AxialAxes, recist_axes

__all__ = [
    "AxialAxes",
    "Burden",
    "NodeMeasurement",
    "RecistCategory",
    "label_nodes",
    "max_diameter_3d",
    "measure_nodes",
    "recist_axes",
    "recist_category",
    "series_burden",
]

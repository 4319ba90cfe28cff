"""Node measurements on masks placed on the CT grid."""

from pipeline.measure.components import NodeMeasurement, label_nodes, measure_nodes

__all__ = ["NodeMeasurement", "label_nodes", "measure_nodes"]

"""Scoring against the expert reference: LNQ2023 per-case rules, aggregates, node detection."""

from pipeline.evaluate.aggregate import aggregate_scores
from pipeline.evaluate.detection import (
    DEFAULT_IOU_THRESHOLD,
    Detection,
    NodeMatch,
    detect,
    match_nodes,
    overlapping_pairs,
)
from pipeline.evaluate.lnq2023 import CaseScore, binary_uint8, check_same_grid, score_case

__all__ = [
    "DEFAULT_IOU_THRESHOLD",
    "CaseScore",
    "Detection",
    "NodeMatch",
    "aggregate_scores",
    "binary_uint8",
    "check_same_grid",
    "detect",
    "match_nodes",
    "overlapping_pairs",
    "score_case",
]

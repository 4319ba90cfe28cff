"""Deterministic identities: DICOM UIDs and node tracking identifiers that a rerun reproduces.

A rerun of the same series with the same model (name and version) and node source must
rewrite the same SEG and SR objects and give every node the same tracking UID, so that
Parquet rows, SEG segments and SR measurement groups join across runs. UIDs are UUIDv5
of their parts in the ``2.25`` form (PS3.5 B.2), at most 64 characters.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pipeline.enums import NodeSource

_UID_NAMESPACE = uuid.UUID("5b0f7a8e-3c4d-4f0e-9d21-6a1c2b3e4f50")


def derived_uid(*parts: str) -> str:
    """A DICOM UID (2.25 form) that is the same for the same parts."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(parts)).int}"


@dataclass(frozen=True)
class NodeTracking:
    """A node's tracking identifier (human readable) and tracking unique identifier."""

    identifier: str
    uid: str


def node_label(node_index: int) -> str:
    """The segment label and tracking identifier of node ``node_index``."""
    return f"Lymph node {node_index}"


def node_tracking(
    series_uid: str, *, model_name: str, model_version: str, source: NodeSource | str, node_index: int
) -> NodeTracking:
    """Tracking of node ``node_index`` of ``series_uid`` as found by this model in this source."""
    source = NodeSource(source)
    uid = derived_uid("tracking", series_uid, model_name, model_version, source.value, str(node_index))
    return NodeTracking(identifier=node_label(node_index), uid=uid)


def line_tracking(node: NodeTracking, line: str) -> NodeTracking:
    """Tracking of one of a node's lines ("short axis") where a viewer needs it apart from the node's.

    OHIF v3 merges the SR measurement groups that share a tracking UID and draws only the first
    line among them, so the short axis carries its own tracking: identifier the node's plus the
    line's name ("Lymph node 1 short axis"), UID derived from the node's UID and that name.
    """
    return NodeTracking(identifier=f"{node.identifier} {line}", uid=derived_uid("line", node.uid, line))


def object_uids(
    kind: str, series_uid: str, *, model_name: str, model_version: str, source: NodeSource | str
) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the ``kind`` object ("seg", "sr") of one series."""
    key = (series_uid, model_name, model_version, NodeSource(source).value)
    return derived_uid(f"{kind}-series", *key), derived_uid(f"{kind}-instance", *key)

"""The nnU-Net v2 raw dataset layout and its ``dataset.json``.

``DIR/Dataset<NNN>_<NAME>/`` holds ``imagesTr/<case>_0000.nii.gz`` and ``labelsTr/<case>.nii.gz``
(training), ``imagesTs/`` and ``labelsTs/`` (held-out test cases), ``dataset.json`` and
``splits_final.json`` (nnU-Net's documented raw layout; ``_0000`` is the CT channel).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

from pipeline.training.settings import BACKGROUND, FILE_ENDING, IGNORE, LYMPH_NODE

CHANNEL = "0000"
"""The one input channel (CT) in nnU-Net's file naming."""
READER = "SimpleITKIO"
"""The image reader named in ``dataset.json``: the one that wrote the files (SimpleITK), and one whose
axes ``lnq run --model nnunet:...`` reproduces."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Split(str, enum.Enum):
    """Where a case goes: nnU-Net's training folders or the held-out test folders."""

    TRAIN = "train"
    TEST = "test"

    def __str__(self) -> str:
        return self.value

    @property
    def images(self) -> str:
        return "imagesTr" if self == Split.TRAIN else "imagesTs"

    @property
    def labels(self) -> str:
        return "labelsTr" if self == Split.TRAIN else "labelsTs"


CASE_FOLDERS = tuple(folder for split in Split for folder in (split.images, split.labels))


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<NNN>_<NAME>``, as nnU-Net finds datasets by their three-digit id."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id {dataset_id} is not in 1..999 (nnU-Net names datasets Dataset001..999)")
    if not _NAME.match(name):
        raise ValueError(
            f"dataset name {name!r}: expected 1 to 64 letters, digits, '_' or '-' (first a letter or digit)"
        )
    return f"Dataset{dataset_id:03d}_{name}"


def image_file(case_id: str, split: Split) -> str:
    """The case's CT, relative to the dataset folder."""
    return f"{split.images}/{case_id}_{CHANNEL}{FILE_ENDING}"


def label_file(case_id: str, split: Split) -> str:
    """The case's label volume, relative to the dataset folder."""
    return f"{split.labels}/{case_id}{FILE_ENDING}"


def dataset_json(
    *,
    name: str,
    n_training: int,
    n_test: int,
    with_ignore: bool,
    provenance: Mapping[str, Any],
    export: Mapping[str, Any],
) -> dict[str, Any]:
    """nnU-Net v2's ``dataset.json`` for the exported cases.

    ``with_ignore``: some training case is partially annotated, so the ignore label is declared
    (nnU-Net wants it the highest label). ``provenance``: ``name``-independent facts about the data
    (``reference``, ``licence``, ``release``, ``citation``, ``description``; see
    :mod:`pipeline.training.provenance`). ``export``: how the labels were made, kept for the record
    under ``lnq_export`` (nnU-Net ignores keys it does not know)."""
    labels = {"background": BACKGROUND, "lymph_node": LYMPH_NODE}
    if with_ignore:
        labels["ignore"] = IGNORE
    return {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": int(n_training),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": READER,
        "name": name,
        **dict(provenance),
        "numTest": int(n_test),
        "lnq_export": dict(export),
    }

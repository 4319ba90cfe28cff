"""Closed vocabularies used across the project: stages, node sources, series status, model kinds.

Each is a ``str`` enum, so a member compares equal to (and serialises as) its value in
tables and messages, while code that builds rows, exceptions and timings cannot misspell one.
"""

from __future__ import annotations

import enum


class Stage(str, enum.Enum):
    """Where in the processing of one series something happened (the ``errors.stage`` column)."""

    COHORT = "cohort"
    FETCH = "fetch"
    DECODE = "decode"
    REFERENCE = "reference"
    INFERENCE = "inference"
    POSTPROCESS = "postprocess"
    MEASURE = "measure"
    SEG_WRITE = "seg_write"
    SCORE = "score"
    QC = "qc"
    EXPORT = "export"
    """Training export (``lnq export-training``): labels built, NIfTI written and copied."""
    UNEXPECTED = "unexpected"

    def __str__(self) -> str:
        return self.value


TIMED_STAGES: tuple[Stage, ...] = (
    Stage.FETCH,
    Stage.DECODE,
    Stage.REFERENCE,
    Stage.INFERENCE,
    Stage.POSTPROCESS,
    Stage.MEASURE,
    Stage.SEG_WRITE,
    Stage.SCORE,
    Stage.QC,
)
"""Stages with a ``<stage>_s`` seconds column in the ``series`` table, in table order."""


class NodeSource(str, enum.Enum):
    """Which mask a node comes from (the ``nodes.source`` column)."""

    REFERENCE = "reference"
    PREDICTION = "prediction"

    def __str__(self) -> str:
        return self.value


class SeriesStatus(str, enum.Enum):
    """Outcome of one series (the ``series.status`` column)."""

    OK = "ok"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


class ModelKind(str, enum.Enum):
    """Kinds of segmentation model a run can load (a model given as ``KIND:PATH``)."""

    NNUNET = "nnunet"
    TORCHSCRIPT = "torchscript"

    def __str__(self) -> str:
        return self.value


class Annotation(str, enum.Enum):
    """How the expert SEG of a series was annotated (the cohort's ``annotation`` column): every node
    (the SEG's 'Fully Annotated') or some (its 'Partially Annotated': what is absent is unknown)."""

    FULL = "full"
    PARTIAL = "partial"

    def __str__(self) -> str:
        return self.value


ANNOTATION_CHOICES = (Annotation.FULL.value, Annotation.PARTIAL.value, "all")
"""Which LNQ annotations a cohort selects: one kind, or both."""

REFERENCE_MODEL = "reference"
"""The ``model`` of a run without a model (the expert reference is measured; ``--model reference``),
and the model name its SEG and SR give."""

DEVICES = ("auto", "cpu", "cuda")
"""Where a model runs: ``auto`` is CUDA when torch sees a GPU, else the CPU."""

DEFAULT_IOU_THRESHOLD = 0.1
"""Node detection: a predicted and a reference node match (one to one) when their intersection over
union is at least this; nnDetection's threshold for LIDC and LUNA (``pipeline.evaluate.detection``).
Here, in a module without numpy, so that ``lnq run --help`` can show it."""

NNUNET_CHECKPOINT = "checkpoint_final.pth"
"""The checkpoint file nnU-Net writes in each ``fold_N/`` at the end of training (``--checkpoint``)."""
NNUNET_STEP_SIZE = 0.5
"""nnU-Net's own default sliding-window step, as a fraction of the patch (``--step-size``)."""

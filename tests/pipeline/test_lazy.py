"""Package names loaded on first use resolve to the modules' own objects; unknown names fail."""

from __future__ import annotations

import pytest


def test_package_names_are_the_modules_objects() -> None:
    import pipeline.cohort
    import pipeline.dicom
    import pipeline.measure
    from pipeline.cohort.rows import CohortRow
    from pipeline.dicom.volume import CtVolume
    from pipeline.measure.components import label_nodes

    assert pipeline.dicom.CtVolume is CtVolume
    assert pipeline.measure.label_nodes is label_nodes
    assert pipeline.cohort.CohortRow is CohortRow
    for package in (pipeline.cohort, pipeline.dicom, pipeline.measure):
        assert all(hasattr(package, name) for name in package.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    import pipeline.dicom

    with pytest.raises(AttributeError, match="module 'pipeline.dicom' has no attribute 'nope'"):
        pipeline.dicom.nope  # noqa: B018

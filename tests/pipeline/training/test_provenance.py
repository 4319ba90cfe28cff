"""Provenance from idc-index's bundled index, offline: collection, data DOI, licence, viewer."""

from __future__ import annotations

from pipeline.cohort.query import select_cohort
from pipeline.training.provenance import IDC_DOI, dataset_provenance, idc_release, series_sources


def test_lnq_series_have_their_collection_doi_and_licence() -> None:
    rows = select_cohort(annotation="all", limit=2).to_pylist()
    uids = [r["ct_series_instance_uid"] for r in rows]
    sources = series_sources([*uids, "1.2.826.0.1.9"])
    assert sorted(sources) == sorted(uids)  # a series not in IDC has no source
    for row in rows:
        source = sources[row["ct_series_instance_uid"]]
        assert source.collection_id == "mediastinal_lymph_node_seg"
        assert source.source_doi == "10.7937/qvaz-ja09"
        assert source.license == "CC BY 4.0"
        assert source.idc_viewer_url == (
            "https://viewer.imaging.datacommons.cancer.gov/v3/viewer/"
            f"?StudyInstanceUIDs={row['study_instance_uid']}"
            f"&initialSeriesInstanceUID={row['ct_series_instance_uid']}"
        )
    described = dataset_provenance([sources[uids[0]], sources[uids[1]], None], release=idc_release())
    assert described["reference"] == "https://doi.org/10.7937/qvaz-ja09"
    assert described["licence"] == "CC BY 4.0; 1 case(s) not in IDC's index: licence unknown"
    assert described["citation"] == ["https://doi.org/10.7937/qvaz-ja09", f"https://doi.org/{IDC_DOI}"]
    assert (
        described["release"].startswith("IDC v") and "mediastinal_lymph_node_seg" in described["description"]
    )


def test_nothing_in_idc() -> None:
    assert series_sources([]) == {}
    described = dataset_provenance([None], release="v25")
    assert described["reference"] == "not in IDC's index"
    assert described["citation"] == [f"https://doi.org/{IDC_DOI}"]

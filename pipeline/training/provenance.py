"""Where the exported cases come from, their licence and what to cite, from idc-index offline.

idc-index's bundled series index (the ``idc-index-data`` wheel, no network) holds, per series, its
``collection_id``, ``source_DOI`` (the collection's data DOI: ``10.7937/qvaz-ja09`` for LNQ) and
``license_short_name`` (``CC BY 4.0``). The formatted citation is not offline: idc-index's
``IDCClient.citations_from_selection`` asks doi.org for each DOI, adding IDC's own paper
(:data:`IDC_DOI`); the export records the DOIs, and ``docs/training.md`` says how to format them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IDC_DOI = "10.1148/rg.230180"
"""Fedorov et al., RadioGraphics 2023, "National Cancer Institute Imaging Data Commons": the paper
idc-index adds to every citation list (``IDCClient.citations_from_selection``)."""
VIEWER_URL = "https://viewer.imaging.datacommons.cancer.gov/v3/viewer/?StudyInstanceUIDs={study}&initialSeriesInstanceUID={series}"
"""IDC's OHIF v3 viewer for a series, as idc-index's ``get_viewer_URL`` builds it."""
NOT_IN_IDC = "not in IDC's index"


@dataclass(frozen=True)
class SeriesSource:
    """What IDC's index says about one CT series."""

    collection_id: str
    source_doi: str | None
    license: str | None
    idc_viewer_url: str


def idc_release() -> str:
    """IDC's data release of the bundled index (``v25`` for idc-index-data 25.x)."""
    import idc_index_data

    return f"v{str(idc_index_data.__version__).split('.')[0]}"


def series_sources(
    ct_series_uids: Iterable[str], *, index_path: str | None = None
) -> dict[str, SeriesSource]:
    """CT series UID -> its IDC source, for the series in idc-index's bundled index (others are
    absent: a local or private series)."""
    import pyarrow.parquet as pq

    from pipeline.cohort.query import bundled_index_path

    wanted = sorted({uid for uid in ct_series_uids if uid})
    if not wanted:
        return {}
    table = pq.read_table(
        index_path or bundled_index_path(),
        columns=[
            "SeriesInstanceUID",
            "StudyInstanceUID",
            "collection_id",
            "source_DOI",
            "license_short_name",
        ],
        filters=[("SeriesInstanceUID", "in", wanted)],
    )
    return {
        row["SeriesInstanceUID"]: SeriesSource(
            collection_id=row["collection_id"],
            source_doi=row["source_DOI"] or None,
            license=row["license_short_name"] or None,
            idc_viewer_url=VIEWER_URL.format(study=row["StudyInstanceUID"], series=row["SeriesInstanceUID"]),
        )
        for row in table.to_pylist()
    }


def dataset_provenance(sources: Iterable[SeriesSource | None], *, release: str) -> dict[str, Any]:
    """The provenance keys of ``dataset.json`` (nnU-Net's ``reference``, ``licence``, ``release``,
    ``citation``, ``description``) for the cases' sources; None stands for a case not in IDC's
    index, whose licence the export cannot know."""
    listed = list(sources)
    known = [s for s in listed if s is not None]
    unknown = len(listed) - len(known)
    collections = sorted({s.collection_id for s in known})
    dois = sorted({s.source_doi for s in known if s.source_doi})
    licences = sorted({s.license for s in known if s.license})
    if unknown:
        licences.append(f"{unknown} case(s) {NOT_IN_IDC}: licence unknown")
    return {
        "description": (
            "CT and expert lymph node segmentations from NCI Imaging Data Commons "
            f"(collections: {', '.join(collections) or 'none'}), exported by lnq export-training"
        ),
        "reference": ", ".join(f"https://doi.org/{doi}" for doi in dois) or NOT_IN_IDC,
        "licence": "; ".join(licences) or NOT_IN_IDC,
        "release": f"IDC {release}",
        "citation": [f"https://doi.org/{doi}" for doi in [*dois, IDC_DOI]],
    }

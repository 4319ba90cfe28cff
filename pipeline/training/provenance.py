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
    absent: a local or private series). Runs ``queries/bigquery/series_provenance.sql`` on DuckDB
    (one thread, streaming the index: about 5 MB and 0.1 s for LNQ's 513 series, where reading the
    index's columns with pyarrow held 340 MB)."""
    wanted = sorted({uid for uid in ct_series_uids if uid})
    if not wanted:
        return {}
    import duckdb

    import queries
    from queries.sql_text import SERIES_RELATION

    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        con.read_parquet(index_path or _bundled_index_path()).create_view(SERIES_RELATION)
        rows = con.execute(
            queries.load_duckdb("bigquery/series_provenance"), {"series_uids": wanted}
        ).fetchall()
    finally:
        con.close()
    return {
        series: SeriesSource(
            collection_id=collection,
            source_doi=doi or None,
            license=licence or None,
            idc_viewer_url=VIEWER_URL.format(study=study, series=series),
        )
        for series, study, collection, doi, licence in rows
    }


def _bundled_index_path() -> str:
    """idc-index's series index in the idc-index-data wheel (``pipeline.cohort.query`` reads it too;
    named here without importing that module's pandas)."""
    import idc_index_data

    return str(idc_index_data.IDC_INDEX_PARQUET_FILEPATH)


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

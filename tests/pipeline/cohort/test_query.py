"""The LNQ cohort from idc-index's bundled index (offline)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.cohort.query import cohort_table, select_cohort
from pipeline.cohort.rows import validate_cohort_row
from pipeline.errors import CohortError
from pipeline.outputs.schemas import COHORT_SCHEMA


@pytest.fixture(scope="module")
def everything() -> pa.Table:
    return select_cohort(annotation="all")


def test_counts(everything: pa.Table) -> None:
    assert everything.num_rows == 513
    assert select_cohort(annotation="full").num_rows == 120
    assert select_cohort(annotation="partial").num_rows == 393


def test_schema_and_contract(everything: pa.Table) -> None:
    assert everything.schema.equals(COHORT_SCHEMA)
    rows = everything.to_pylist()
    assert len({r["ct_series_instance_uid"] for r in rows}) == 513
    assert {r["annotation"] for r in rows} == {"full", "partial"}
    for r in rows:
        validate_cohort_row(r)
        assert r["ct_series_url"].startswith("s3://idc-open-data/") and r["ct_series_url"].endswith("/*")
        assert r["ct_instance_count"] >= 48
    assert sum(r["ct_size_mb"] for r in rows) == pytest.approx(35_000, rel=0.1)


def test_seg_pairs_with_its_study(everything: pa.Table) -> None:
    rows = everything.to_pylist()
    assert all(r["seg_series_instance_uid"] and r["seg_series_url"] for r in rows)
    assert len({r["seg_series_instance_uid"] for r in rows}) == 513


def test_limit_and_order_are_stable() -> None:
    first = select_cohort(limit=3).to_pylist()
    again = select_cohort(limit=3).to_pylist()
    assert first == again and len(first) == 3
    assert [r["patient_id"] for r in first] == sorted(r["patient_id"] for r in first)


def test_bad_arguments() -> None:
    with pytest.raises(CohortError, match="annotation 'some' is not one of"):
        select_cohort(annotation="some")
    with pytest.raises(CohortError, match="limit 0"):
        select_cohort(limit=0)


def test_duplicate_ct_series_refused(everything: pa.Table) -> None:
    frame = everything.slice(0, 2).to_pandas()
    frame.loc[1, "ct_series_instance_uid"] = frame.loc[0, "ct_series_instance_uid"]
    with pytest.raises(CohortError, match="appear more than once"):
        cohort_table(frame)


def test_analysis_results_never_join_the_cohort(tmp_path, everything: pa.Table) -> None:  # type: ignore[no-untyped-def]
    """IDC files analysis-result SEGs under their collection's collection_id: one added to an LNQ
    study must not pair with its CT (it would duplicate the row and get the cohort refused)."""
    import duckdb

    from pipeline.cohort.query import bundled_index_path

    index = tmp_path / "index.parquet"
    duckdb.execute(
        f"""
        COPY (
            SELECT * FROM read_parquet('{bundled_index_path()}')
            UNION ALL
            SELECT * REPLACE (
                'ai-seg-1' AS analysis_result_id, SeriesInstanceUID || '.99' AS SeriesInstanceUID,
                'SEG' AS Modality, 'Fully Annotated' AS SeriesDescription
            )
            FROM read_parquet('{bundled_index_path()}')
            WHERE collection_id = 'mediastinal_lymph_node_seg' AND Modality = 'CT'
        ) TO '{index}' (FORMAT parquet)
        """
    )
    assert select_cohort(index_path=str(index)).equals(everything)


def test_bucket_urls_are_built_from_the_series_uuid(everything: pa.Table) -> None:
    import re

    for row in everything.to_pylist()[:50]:
        url = row["ct_series_url"]
        assert re.fullmatch(r"s3://idc-open-data/[0-9a-f-]{36}/\*", url), url

-- Where each CT series comes from: its collection, that collection's data DOI and licence.
-- Dialect: BigQuery, over `index`, a series-level relation with idc-index's column names (one row
-- per series), as lnq_cohort.sql. Run offline only: translated to DuckDB with sqlglot over
-- idc-index's bundled series index (pipeline/training/provenance.py), which carries source_DOI and
-- license_short_name; idc_series_index.sql, the BigQuery twin of that index, does not (yet).
-- Bound parameters:
--   @series_uids  ARRAY<STRING>, the CT series to describe (a join, not IN UNNEST: DuckDB then
--                 looks each row up once instead of scanning the array for each of 1 M rows)
SELECT
    i.SeriesInstanceUID,
    i.StudyInstanceUID,
    i.collection_id,
    i.source_DOI,
    i.license_short_name
FROM index AS i
JOIN UNNEST(@series_uids) AS uid ON i.SeriesInstanceUID = uid
ORDER BY i.SeriesInstanceUID

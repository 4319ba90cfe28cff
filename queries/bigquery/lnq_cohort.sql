-- The LNQ cohort: one row per CT series, paired with the expert SEG of the same study.
-- Dialect: BigQuery, over `index`, a series-level relation with idc-index's column names (one row
-- per series). Written once and run in two places:
--   offline: translated to DuckDB with sqlglot, `index` being idc-index's bundled series index;
--   BigQuery: `index` is idc_series_index.sql over bigquery-public-data.idc_current.dicom_all,
--             put in front of this query by queries/sql_text.py (bigquery_cohort_sql).
-- Bound parameters:
--   @collection_id  IDC collection, 'mediastinal_lymph_node_seg' for LNQ
--   @annotation     'full' | 'partial' | 'all'
-- SEG SeriesDescription is 'Fully Annotated' or 'Partially Annotated' (DOMAIN.md).
-- Only original data: analysis-result series (IDC holds ~178k analysis-result SEGs, filed under
-- their collection's collection_id) are left out, so one added to an LNQ study cannot pair with its
-- CT. Bucket URLs are built from aws_bucket and crdc_series_uuid, as idc-index builds them
-- (idc-index-data is phasing out series_aws_url).
WITH ct AS (
    SELECT
        PatientID,
        StudyInstanceUID,
        SeriesInstanceUID,
        CONCAT('s3://', aws_bucket, '/', crdc_series_uuid, '/*') AS series_aws_url,
        instanceCount,
        series_size_MB
    FROM index
    WHERE collection_id = @collection_id
      AND analysis_result_id IS NULL
      AND Modality = 'CT'
),
seg AS (
    SELECT
        StudyInstanceUID,
        SeriesInstanceUID,
        CONCAT('s3://', aws_bucket, '/', crdc_series_uuid, '/*') AS series_aws_url,
        CASE SeriesDescription
            WHEN 'Fully Annotated' THEN 'full'
            WHEN 'Partially Annotated' THEN 'partial'
        END AS annotation
    FROM index
    WHERE collection_id = @collection_id
      AND analysis_result_id IS NULL
      AND Modality = 'SEG'
),
paired AS (
    SELECT
        ct.PatientID AS patient_id,
        ct.StudyInstanceUID AS study_instance_uid,
        ct.SeriesInstanceUID AS ct_series_instance_uid,
        ct.series_aws_url AS ct_series_url,
        seg.SeriesInstanceUID AS seg_series_instance_uid,
        seg.series_aws_url AS seg_series_url,
        seg.annotation AS annotation,
        ct.instanceCount AS ct_instance_count,
        ct.series_size_MB AS ct_size_mb
    FROM ct
    LEFT JOIN seg ON seg.StudyInstanceUID = ct.StudyInstanceUID
)
SELECT *
FROM paired
WHERE @annotation = 'all' OR annotation = @annotation
ORDER BY patient_id, ct_series_instance_uid

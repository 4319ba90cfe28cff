-- The LNQ cohort from BigQuery: the twin of idc_index/lnq_cohort.sql, same output columns.
-- Dialect: BigQuery standard SQL over bigquery-public-data.idc_current.dicom_all (one row per instance).
-- Bound parameters:
--   @collection_id  IDC collection, 'mediastinal_lymph_node_seg' for LNQ
--   @annotation     'full' | 'partial' | 'all'
-- Series URL and size follow idc-index's own index query (s3://<bucket>/<crdc_series_uuid>/*, MB = 1e6 bytes).
WITH series AS (
    SELECT
        SeriesInstanceUID,
        ANY_VALUE(PatientID) AS PatientID,
        ANY_VALUE(StudyInstanceUID) AS StudyInstanceUID,
        ANY_VALUE(Modality) AS Modality,
        ANY_VALUE(SeriesDescription) AS SeriesDescription,
        ANY_VALUE(CONCAT('s3://', SPLIT(aws_url, '/')[SAFE_OFFSET(2)], '/', crdc_series_uuid, '/*')) AS series_aws_url,
        COUNT(SOPInstanceUID) AS instanceCount,
        ROUND(SUM(SAFE_CAST(instance_size AS FLOAT64)) / 1000000, 2) AS series_size_MB
    FROM `bigquery-public-data.idc_current.dicom_all`
    WHERE collection_id = @collection_id
      AND Modality IN ('CT', 'SEG')
    GROUP BY SeriesInstanceUID
),
ct AS (
    SELECT * FROM series WHERE Modality = 'CT'
),
seg AS (
    SELECT
        StudyInstanceUID,
        SeriesInstanceUID,
        series_aws_url,
        CASE SeriesDescription
            WHEN 'Fully Annotated' THEN 'full'
            WHEN 'Partially Annotated' THEN 'partial'
        END AS annotation
    FROM series
    WHERE Modality = 'SEG'
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

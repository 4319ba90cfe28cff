-- idc-index's series index (the columns lnq_cohort.sql reads) built from BigQuery's instance-level
-- bigquery-public-data.idc_current.dicom_all: one row per series of one collection. Each column is
-- computed as idc-index-data's own idc_index.sql computes it, so the cohort is the same offline
-- (idc-index's bundled index) and on BigQuery (IDC's current release).
-- Dialect: BigQuery. Bound parameter: @collection_id.
SELECT
    ANY_VALUE(collection_id) AS collection_id,
    ANY_VALUE(analysis_result_id) AS analysis_result_id,
    ANY_VALUE(PatientID) AS PatientID,
    SeriesInstanceUID,
    ANY_VALUE(StudyInstanceUID) AS StudyInstanceUID,
    ANY_VALUE(Modality) AS Modality,
    ANY_VALUE(NULLIF(SeriesDescription, '')) AS SeriesDescription,
    COUNT(SOPInstanceUID) AS instanceCount,
    ANY_VALUE(aws_bucket) AS aws_bucket,
    ANY_VALUE(crdc_series_uuid) AS crdc_series_uuid,
    SUM(SAFE_CAST(instance_size AS FLOAT64)) / 1000000 AS series_size_MB
FROM `bigquery-public-data.idc_current.dicom_all`
WHERE collection_id = @collection_id
GROUP BY SeriesInstanceUID

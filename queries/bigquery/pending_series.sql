-- LNQ series that still need processing with @model: in IDC's current release, and without an
-- 'ok' row for that model in the results dataset's series table (new series, a new model version,
-- or earlier failures). Same columns as lnq_cohort.sql, so the result is a cohort for lnq run.
-- Dialect: BigQuery. Bound parameters: @collection_id, @annotation, @model.
-- `series` is the results table, resolved through the job's default dataset.
WITH idc AS (
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
paired AS (
    SELECT
        ct.PatientID AS patient_id,
        ct.StudyInstanceUID AS study_instance_uid,
        ct.SeriesInstanceUID AS ct_series_instance_uid,
        ct.series_aws_url AS ct_series_url,
        seg.SeriesInstanceUID AS seg_series_instance_uid,
        seg.series_aws_url AS seg_series_url,
        CASE seg.SeriesDescription
            WHEN 'Fully Annotated' THEN 'full'
            WHEN 'Partially Annotated' THEN 'partial'
        END AS annotation,
        ct.instanceCount AS ct_instance_count,
        ct.series_size_MB AS ct_size_mb
    FROM idc AS ct
    LEFT JOIN idc AS seg
        ON seg.StudyInstanceUID = ct.StudyInstanceUID AND seg.Modality = 'SEG'
    WHERE ct.Modality = 'CT'
),
done AS (
    SELECT DISTINCT ct_series_instance_uid
    FROM series
    WHERE model = @model AND status = 'ok'
)
SELECT p.*
FROM paired AS p
LEFT JOIN done AS d USING (ct_series_instance_uid)
WHERE d.ct_series_instance_uid IS NULL
  AND (@annotation = 'all' OR p.annotation = @annotation)
ORDER BY p.patient_id, p.ct_series_instance_uid

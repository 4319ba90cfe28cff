-- The LNQ cohort: one row per CT series, paired with the expert SEG of the same study.
-- Dialect: DuckDB, over idc-index's bundled `index` table (one row per series).
-- Bound parameters:
--   $collection_id  IDC collection, 'mediastinal_lymph_node_seg' for LNQ
--   $annotation     'full' | 'partial' | 'all'
-- SEG SeriesDescription is 'Fully Annotated' or 'Partially Annotated' (DOMAIN.md).
WITH ct AS (
    SELECT
        PatientID,
        StudyInstanceUID,
        SeriesInstanceUID,
        series_aws_url,
        instanceCount,
        series_size_MB
    FROM index
    WHERE collection_id = $collection_id
      AND Modality = 'CT'
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
    FROM index
    WHERE collection_id = $collection_id
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
WHERE $annotation = 'all' OR annotation = $annotation
ORDER BY patient_id, ct_series_instance_uid

-- Data-quality check after a scheduled run: every pending cohort row has exactly one row in the
-- series table the run just loaded (series_staging). Returns one boolean; true means complete.
-- Dialect: BigQuery. {dataset} is the results dataset (PROJECT.DATASET), substituted by the DAG
-- (identifiers cannot be bound as parameters); no value is formatted in.
SELECT
    (SELECT COUNT(*) FROM `{dataset}.cohort_pending`) = (SELECT COUNT(*) FROM `{dataset}.series_staging`)
    AND NOT EXISTS (
        SELECT 1
        FROM `{dataset}.cohort_pending` AS c
        LEFT JOIN `{dataset}.series_staging` AS s USING (ct_series_instance_uid)
        WHERE s.ct_series_instance_uid IS NULL
    ) AS every_cohort_row_accounted_for

-- Data-quality check after a scheduled run: every pending cohort row has exactly one row in the
-- series table the run just loaded (series_staging). Returns one boolean; true means complete.
-- Dialect: BigQuery; tables resolved through the default dataset.
SELECT
    (SELECT COUNT(*) FROM cohort_pending) = (SELECT COUNT(*) FROM series_staging)
    AND NOT EXISTS (
        SELECT 1
        FROM cohort_pending AS c
        LEFT JOIN series_staging AS s USING (ct_series_instance_uid)
        WHERE s.ct_series_instance_uid IS NULL
    ) AS every_cohort_row_accounted_for

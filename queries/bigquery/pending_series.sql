-- LNQ series that still need processing with @model: rows of `cohort_all` (the result of
-- lnq_cohort.sql for IDC's current release, stored by the scheduled DAG) without an 'ok' row for
-- that model in the results `series` table: new series, a new model version, earlier failures.
-- Same columns as lnq_cohort.sql, so the result is a cohort for lnq run.
-- Dialect: BigQuery; tables resolved through the job's default dataset. Bound parameter: @model.
SELECT c.*
FROM cohort_all AS c
WHERE NOT EXISTS (
    SELECT 1
    FROM series AS s
    WHERE s.ct_series_instance_uid = c.ct_series_instance_uid
      AND s.model = @model
      AND s.status = 'ok'
)
ORDER BY c.patient_id, c.ct_series_instance_uid

-- Replace the measurements of the run's (series, model) with the freshly loaded staging copy
-- (idempotent reloads). Measurements keep IDC's quantitative_measurements shape, so they carry no
-- series or model of ours: the SR each reloaded (series, model) published before is found through
-- its row of the results `series` table ({series}, sr_instance_uid); run this before `series` is
-- merged. Rows of the staged SRs themselves go too (a reload of the same SR).
-- Dialect: BigQuery scripting. {target}, {staging}, {series} and {keys} (the series table's staging
-- copy) are table ids the loader substitutes after validating them; no value is formatted in.
DELETE FROM `{target}` AS m
WHERE EXISTS (
    SELECT 1
    FROM `{series}` AS s
    JOIN `{keys}` AS k
      ON k.ct_series_instance_uid = s.ct_series_instance_uid AND k.model = s.model
    WHERE s.sr_instance_uid = m.SOPInstanceUID
)
OR EXISTS (
    SELECT 1
    FROM `{staging}` AS n
    WHERE n.SOPInstanceUID = m.SOPInstanceUID
);
INSERT INTO `{target}`
SELECT * FROM `{staging}`;

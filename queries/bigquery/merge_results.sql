-- Replace one run's rows in a results table with the freshly loaded staging copy (idempotent loads).
-- Dialect: BigQuery scripting. {target} and {staging} are table ids the loader substitutes after
-- validating them (identifiers cannot be bound as parameters); no value is formatted in.
DELETE FROM `{target}` AS t
WHERE EXISTS (
    SELECT 1
    FROM `{staging}` AS s
    WHERE s.ct_series_instance_uid = t.ct_series_instance_uid
      AND s.model = t.model
);
INSERT INTO `{target}`
SELECT * FROM `{staging}`;

-- Replace the rows of the run's (series, model) in a results table with the freshly loaded staging
-- copy (idempotent reloads). Keyed by the run's series ({keys}: the series table's staging copy),
-- not by this table's own staged rows: an error row of an earlier failure, or nodes of an earlier
-- result, go even when the new result has none.
-- Dialect: BigQuery scripting. {target}, {staging} and {keys} are table ids the loader substitutes
-- after validating them (identifiers cannot be bound as parameters); no value is formatted in.
DELETE FROM `{target}` AS t
WHERE EXISTS (
    SELECT 1
    FROM `{keys}` AS k
    WHERE k.ct_series_instance_uid = t.ct_series_instance_uid
      AND k.model = t.model
);
INSERT INTO `{target}`
SELECT * FROM `{staging}`;

-- Replace the measurements of the same SR instances in the measurements table with the staged
-- ones (idempotent loads). Rows have IDC's quantitative_measurements shape, keyed by the SR's
-- SOPInstanceUID (one SR per series and model, its UID derived from both).
-- Dialect: BigQuery scripting. {target} and {staging} are table ids the loader substitutes after
-- validating them (identifiers cannot be bound as parameters); no value is formatted in.
DELETE FROM `{target}` AS t
WHERE EXISTS (
    SELECT 1
    FROM `{staging}` AS s
    WHERE s.SOPInstanceUID = t.SOPInstanceUID
);
INSERT INTO `{target}`
SELECT * FROM `{staging}`;

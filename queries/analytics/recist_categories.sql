-- How many nodes fall in each RECIST category (target >= 15 mm, non_target 10-15 mm, normal < 10 mm),
-- split by quality flag (ok, speck, implausible: pipeline/measure/quality.py) so that specks and
-- implausible nodes can be left out, as the run report does. Dialect: BigQuery; table nodes of a run.
SELECT
    model,
    source,
    recist_category,
    quality_flag,
    COUNT(*) AS n_nodes,
    COUNT(DISTINCT patient_id) AS n_patients,
    AVG(short_axis_mm) AS mean_short_axis_mm
FROM nodes
GROUP BY model, source, recist_category, quality_flag
ORDER BY model, source, recist_category, quality_flag

-- Node burden per patient, model and source (reference = expert SEG, prediction = the model's).
-- Dialect: BigQuery; tables series and nodes of a run (BigQuery: the dataset's tables; DuckDB: Parquet).
-- Series that failed are left out; a series with no node counts as zero burden.
WITH measured AS (
    SELECT s.patient_id, s.model, src AS source, s.ct_series_instance_uid
    FROM series AS s
    CROSS JOIN UNNEST(['reference', 'prediction']) AS src
    WHERE s.status = 'ok'
      AND ((src = 'reference' AND s.n_reference_nodes IS NOT NULL)
        OR (src = 'prediction' AND s.n_prediction_nodes IS NOT NULL))
)
SELECT
    m.patient_id,
    m.model,
    m.source,
    COUNT(DISTINCT m.ct_series_instance_uid) AS n_series,
    COUNT(n.node_index) AS n_nodes,
    COUNTIF(n.short_axis_mm >= 10) AS n_nodes_short_axis_ge_10mm,
    COUNTIF(n.short_axis_mm >= 15) AS n_nodes_short_axis_ge_15mm,
    COALESCE(SUM(n.volume_ml), 0) AS total_volume_ml,
    COALESCE(SUM(IF(n.short_axis_mm >= 10, n.short_axis_mm, 0)), 0) AS sum_short_axis_pathological_mm,
    MAX(n.short_axis_mm) AS max_short_axis_mm
FROM measured AS m
LEFT JOIN nodes AS n
    ON n.ct_series_instance_uid = m.ct_series_instance_uid
   AND n.model = m.model
   AND n.source = m.source
GROUP BY m.patient_id, m.model, m.source
ORDER BY m.patient_id, m.model, m.source

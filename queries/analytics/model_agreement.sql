-- Model against reference, per model and annotation: LNQ2023 scores, detection, volume agreement.
-- Dialect: BigQuery; table series of a run. Only series scored against a reference count.
SELECT
    model,
    annotation,
    COUNT(*) AS n_series,
    AVG(dsc) AS dsc_mean,
    AVG(assd_mm) AS assd_mm_mean,
    COUNTIF(assd_mm IS NULL) AS n_empty_predictions,
    AVG(sensitivity_short_axis_ge_10mm) AS sensitivity_short_axis_ge_10mm_mean,
    SUM(false_positive_nodes) AS false_positive_nodes,
    AVG(false_positive_nodes) AS false_positive_nodes_per_patient,
    AVG(prediction_volume_ml - reference_volume_ml) AS volume_bias_ml,
    CORR(prediction_volume_ml, reference_volume_ml) AS volume_correlation
FROM series
WHERE status = 'ok' AND dsc IS NOT NULL
GROUP BY model, annotation
ORDER BY model, annotation

-- Model against reference, per model, annotation and detection rule: LNQ2023 scores, node detection,
-- volume agreement. Dialect: BigQuery; table series of a run. Only series scored against a reference
-- count. Sensitivity is pooled over nodes (detected / reference nodes >= 10 mm), as the run report
-- gives it; nodes are matched one to one at IoU >= detection_iou_threshold (pipeline/evaluate/detection.py).
SELECT
    model,
    annotation,
    detection_iou_threshold,
    COUNT(*) AS n_series,
    AVG(dsc) AS dsc_mean,
    AVG(assd_mm) AS assd_mm_mean,
    COUNTIF(assd_mm IS NULL) AS n_empty_predictions,
    SAFE_DIVIDE(
        SUM(n_reference_nodes_ge_10mm_detected), SUM(n_reference_nodes_short_axis_ge_10mm)
    ) AS sensitivity_short_axis_ge_10mm,
    SUM(false_positive_nodes) AS false_positive_nodes,
    AVG(false_positive_nodes) AS false_positive_nodes_per_patient,
    AVG(prediction_volume_ml - reference_volume_ml) AS volume_bias_ml,
    CORR(prediction_volume_ml, reference_volume_ml) AS volume_correlation
FROM series
WHERE status = 'ok' AND dsc IS NOT NULL
GROUP BY model, annotation, detection_iou_threshold
ORDER BY model, annotation, detection_iou_threshold

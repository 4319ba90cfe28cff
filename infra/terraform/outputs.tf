output "results_bucket" {
  description = "Where runs write their tables and SEGs: pass gs://<this>/runs/<name> as --output."
  value       = google_storage_bucket.results.name
}

output "temp_location" {
  description = "Dataflow --temp_location."
  value       = "gs://${google_storage_bucket.scratch["temp"].name}/tmp"
}

output "staging_location" {
  description = "Dataflow --staging_location (expires); flex templates are kept under templates/ of the same bucket."
  value       = "gs://${google_storage_bucket.scratch["staging"].name}/staging"
}

output "dataset" {
  description = "BigQuery results dataset, PROJECT.DATASET, for lnq load-bigquery --dataset."
  value       = "${var.project_id}.${google_bigquery_dataset.results.dataset_id}"
}

output "image_repository" {
  description = "Artifact Registry path for the worker image (make image IMAGE=<this>/lnq-worker:TAG)."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "service_account" {
  description = "Run Dataflow jobs as this account: --service_account_email."
  value       = google_service_account.pipeline.email
}

output "composer_dag_folder" {
  description = "Where to copy infra/composer/dags/ (null without Composer)."
  value       = var.enable_composer ? google_composer_environment.lnq[0].config[0].dag_gcs_prefix : null
}

output "flex_template" {
  description = "Where `make template` writes the flex template and the DAG launches it from."
  value       = "gs://${google_storage_bucket.scratch["staging"].name}/${local.template_object}"
}

output "worker_image" {
  description = "The worker image the scheduled DAG passes to Dataflow."
  value       = local.worker_image
}

locals {
  buckets = {
    results = "${var.project_id}-${var.name_prefix}-results"
    temp    = "${var.project_id}-${var.name_prefix}-temp"
    staging = "${var.project_id}-${var.name_prefix}-staging"
  }
  tables = ["series", "nodes", "errors"]
}

# ---- Cloud Storage: results kept (then Nearline), temp and staging expire ----
resource "google_storage_bucket" "results" {
  name                        = local.buckets.results
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = false
  }
  lifecycle_rule {
    condition {
      age = var.results_nearline_days
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }
}

# Dataflow temp files and staged packages/templates: both expire.
resource "google_storage_bucket" "scratch" {
  for_each                    = { temp = local.buckets.temp, staging = local.buckets.staging }
  name                        = each.value
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  lifecycle_rule {
    condition {
      age = var.temp_retention_days
    }
    action {
      type = "Delete"
    }
  }
}

# ---- BigQuery: the results dataset and its tables (schemas generated from pipeline/outputs/schemas.py) ----
resource "google_bigquery_dataset" "results" {
  dataset_id  = replace("${var.name_prefix}_results", "-", "_")
  location    = var.bigquery_location
  description = "LNQ lymph node pipeline results: series, nodes, errors (loaded by lnq load-bigquery)."
}

resource "google_bigquery_table" "results" {
  for_each            = toset(local.tables)
  dataset_id          = google_bigquery_dataset.results.dataset_id
  table_id            = each.key
  schema              = file("${path.module}/schemas/${each.key}.json")
  deletion_protection = true
  clustering          = each.key == "series" ? ["model", "status", "patient_id"] : (each.key == "nodes" ? ["model", "source", "patient_id"] : ["model", "stage"])

  dynamic "time_partitioning" {
    for_each = each.key == "series" ? [1] : []
    content {
      type  = "DAY"
      field = "processed_at"
    }
  }
}

# ---- Artifact Registry: the worker / flex-template image ----
resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = var.name_prefix
  format        = "DOCKER"
  description   = "LNQ pipeline worker and flex-template launcher images."
}

# ---- The pipeline's service account: least privilege ----
resource "google_service_account" "pipeline" {
  account_id   = "${var.name_prefix}-pipeline"
  display_name = "LNQ pipeline (Dataflow workers and launcher)"
}

# Project level: only what running Dataflow jobs and BigQuery jobs requires.
resource "google_project_iam_member" "pipeline_project" {
  for_each = toset(["roles/dataflow.worker", "roles/bigquery.jobUser"])
  project  = var.project_id
  role     = each.key
  member   = "serviceAccount:${google_service_account.pipeline.email}"
}

# Write only to its own buckets.
resource "google_storage_bucket_iam_member" "pipeline_buckets" {
  for_each = {
    results = google_storage_bucket.results.name
    temp    = google_storage_bucket.scratch["temp"].name
    staging = google_storage_bucket.scratch["staging"].name
  }
  bucket = each.value
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.pipeline.email}"
}

# Write only to its own dataset.
resource "google_bigquery_dataset_iam_member" "pipeline_dataset" {
  dataset_id = google_bigquery_dataset.results.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.pipeline.email}"
}

# Pull its own image.
resource "google_artifact_registry_repository_iam_member" "pipeline_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.pipeline.email}"
}
# IDC's data needs no grant: its buckets and bigquery-public-data are readable by anyone.

# ---- Optional: Cloud Composer 3 for the scheduled reprocessing DAG ----
resource "google_service_account" "composer" {
  count        = var.enable_composer ? 1 : 0
  account_id   = "${var.name_prefix}-composer"
  display_name = "LNQ Composer environment"
}

resource "google_project_iam_member" "composer_worker" {
  count   = var.enable_composer ? 1 : 0
  project = var.project_id
  role    = "roles/composer.worker"
  member  = "serviceAccount:${google_service_account.composer[0].email}"
}

# Composer launches flex templates that run as the pipeline's service account.
resource "google_service_account_iam_member" "composer_acts_as_pipeline" {
  count              = var.enable_composer ? 1 : 0
  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.composer[0].email}"
}

resource "google_project_iam_member" "composer_dataflow" {
  count   = var.enable_composer ? 1 : 0
  project = var.project_id
  role    = "roles/dataflow.developer"
  member  = "serviceAccount:${google_service_account.composer[0].email}"
}

resource "google_bigquery_dataset_iam_member" "composer_dataset" {
  count      = var.enable_composer ? 1 : 0
  dataset_id = google_bigquery_dataset.results.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.composer[0].email}"
}

resource "google_project_iam_member" "composer_bigquery_jobs" {
  count   = var.enable_composer ? 1 : 0
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = "serviceAccount:${google_service_account.composer[0].email}"
}

resource "google_storage_bucket_iam_member" "composer_buckets" {
  for_each = var.enable_composer ? {
    results = google_storage_bucket.results.name
    staging = google_storage_bucket.scratch["staging"].name
  } : {}
  bucket = each.value
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.composer[0].email}"
}

resource "google_composer_environment" "lnq" {
  count  = var.enable_composer ? 1 : 0
  name   = "${var.name_prefix}-composer"
  region = var.region
  config {
    software_config {
      image_version = var.composer_image_version
      env_variables = {
        LNQ_PROJECT         = var.project_id
        LNQ_REGION          = var.region
        LNQ_RESULTS_BUCKET  = google_storage_bucket.results.name
        LNQ_STAGING_BUCKET  = google_storage_bucket.scratch["staging"].name
        LNQ_TEMP_BUCKET     = google_storage_bucket.scratch["temp"].name
        LNQ_DATASET         = "${var.project_id}.${google_bigquery_dataset.results.dataset_id}"
        LNQ_SERVICE_ACCOUNT = google_service_account.pipeline.email
      }
    }
    node_config {
      service_account = google_service_account.composer[0].email
    }
  }
  depends_on = [google_project_iam_member.composer_worker]
}

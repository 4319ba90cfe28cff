locals {
  buckets = {
    results = "${var.project_id}-${var.name_prefix}-results"
    temp    = "${var.project_id}-${var.name_prefix}-temp"
    staging = "${var.project_id}-${var.name_prefix}-staging"
  }
  # Every published table and how it is laid out, from their one declaration
  # (pipeline/outputs/schemas.py; `make schemas` writes schemas/<table>.json and schemas/layout.json),
  # as `lnq load-bigquery` creates them when missing.
  tables = jsondecode(file("${path.module}/schemas/layout.json"))
  # The flex template's object in the staging bucket, declared once for the Makefile and the DAG.
  template_object = regex("LNQ_TEMPLATE_OBJECT=(\\S+)", file("${path.module}/../dataflow/template.env"))[0]
}

locals {
  worker_image = coalesce(
    var.worker_image,
    "${var.region}-docker.pkg.dev/${var.project_id}/${var.name_prefix}/lnq-worker:latest"
  )
}

data "google_project" "this" {
  project_id = var.project_id
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

# Dataflow temp files and staged packages expire; flex templates (templates/ in the staging bucket)
# are kept: the monthly DAG launches the one `make template` wrote. No soft delete on either bucket:
# their objects are temporary (Beam warns at every launch otherwise, and soft-deleted objects bill).
resource "google_storage_bucket" "scratch" {
  for_each                    = { temp = local.buckets.temp, staging = local.buckets.staging }
  name                        = each.value
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  soft_delete_policy {
    retention_duration_seconds = 0
  }
  lifecycle_rule {
    condition {
      age            = var.temp_retention_days
      matches_prefix = each.key == "staging" ? ["staging/"] : []
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
  for_each            = local.tables
  dataset_id          = google_bigquery_dataset.results.dataset_id
  table_id            = each.key
  schema              = file("${path.module}/schemas/${each.key}.json")
  deletion_protection = true
  clustering          = each.value.clustering

  dynamic "time_partitioning" {
    for_each = each.value.partition_field == null ? [] : [each.value.partition_field]
    content {
      type  = "DAY"
      field = time_partitioning.value
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

# Composer 3 with a user-managed service account: the Composer service agent must be allowed to act
# for it (roles/composer.ServiceAgentV2Ext on that account), or the environment does not create.
resource "google_service_account_iam_member" "composer_service_agent" {
  count              = var.enable_composer ? 1 : 0
  service_account_id = google_service_account.composer[0].name
  role               = "roles/composer.ServiceAgentV2Ext"
  member             = "serviceAccount:service-${data.google_project.this.number}@cloudcomposer-accounts.iam.gserviceaccount.com"
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
        LNQ_WORKER_IMAGE    = local.worker_image
      }
    }
    node_config {
      service_account = google_service_account.composer[0].email
    }
  }
  depends_on = [google_project_iam_member.composer_worker, google_service_account_iam_member.composer_service_agent]
}

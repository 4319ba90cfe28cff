variable "project_id" {
  description = "Google Cloud project that runs the pipeline and holds its results."
  type        = string
}

variable "region" {
  description = "Region for buckets, Dataflow jobs, Artifact Registry and Composer (pick one with L4 or T4 GPUs, e.g. us-central1)."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = "Prefix of every resource name (buckets are global: make it unique)."
  type        = string
  default     = "lnq"
}

variable "bigquery_location" {
  description = "BigQuery dataset location; US keeps queries joinable with bigquery-public-data.idc_current."
  type        = string
  default     = "US"
}

variable "temp_retention_days" {
  description = "Days before Dataflow temp objects and staged packages are deleted (flex templates are kept)."
  type        = number
  default     = 7
}

variable "results_nearline_days" {
  description = "Days before result objects (Parquet, SEG) move to Nearline storage."
  type        = number
  default     = 90
}

variable "enable_composer" {
  description = "Create a Cloud Composer 3 environment that runs the scheduled reprocessing DAG."
  type        = bool
  default     = false
}

variable "composer_image_version" {
  description = "Cloud Composer image (Composer 3 with the Airflow version the DAG is tested against)."
  type        = string
  default     = "composer-3-airflow-2.10.5"
}

variable "worker_image" {
  description = "Worker and flex-template image the scheduled DAG passes to Dataflow (default: lnq-worker:latest in this project's Artifact Registry, which `make image` pushes)."
  type        = string
  default     = null
}

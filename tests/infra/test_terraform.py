"""Terraform, checked offline: it parses, is formatted, and holds the resources and grants promised."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from beam_jobs.bigquery import LAYOUT, bigquery_schema

TF = Path(__file__).resolve().parents[2] / "infra" / "terraform"


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, dict]]:
    found: dict[str, dict[str, dict]] = {}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as f:
            parsed = hcl2.load(f)
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    found.setdefault(kind.strip('"'), {})[name.strip('"')] = body
    return found


def _text(value: object) -> str:
    return json.dumps(value).replace('\\"', "")


def _s(value: object) -> str:
    """python-hcl2 keeps the quotes of string literals."""
    return str(value).strip('"')


def test_buckets_with_lifecycle_rules(resources) -> None:
    buckets = resources["google_storage_bucket"]
    assert set(buckets) == {"results", "scratch"}
    assert set(buckets["scratch"]["for_each"]) == {"temp", "staging"}
    assert "Delete" in _text(buckets["scratch"]["lifecycle_rule"])
    assert "NEARLINE" in _text(buckets["results"]["lifecycle_rule"])
    for body in buckets.values():
        assert body["uniform_bucket_level_access"] is True
        assert _s(body["public_access_prevention"]) == "enforced"


def test_dataset_tables_match_the_python_schemas(resources) -> None:
    assert "results" in resources["google_bigquery_dataset"]
    table = resources["google_bigquery_table"]["results"]
    assert "time_partitioning" in _text(table) and "processed_at" in _text(table)
    for name in ("series", "nodes", "errors"):
        on_disk = json.loads((TF / "schemas" / f"{name}.json").read_text())
        expected = [{"name": f.name, "type": f.field_type, "mode": f.mode} for f in bigquery_schema(name)]
        assert on_disk == expected, f"regenerate infra/terraform/schemas/{name}.json"
        for column in LAYOUT[name]["clustering"]:
            assert column in _text(table["clustering"])


def test_least_privilege_grants(resources) -> None:
    pipeline_roles = _text(resources["google_project_iam_member"]["pipeline_project"]["for_each"])
    assert "roles/dataflow.worker" in pipeline_roles and "roles/bigquery.jobUser" in pipeline_roles
    assert "storage" not in pipeline_roles  # no project-wide storage grant
    text = _text(resources["google_project_iam_member"])
    assert "roles/dataflow.worker" in text and "roles/bigquery.jobUser" in text
    for broad in ("roles/owner", "roles/editor", "roles/storage.admin", "roles/bigquery.admin"):
        assert broad not in text
    # storage and BigQuery writes are granted on its own buckets and dataset, not the project
    assert (
        _s(resources["google_storage_bucket_iam_member"]["pipeline_buckets"]["role"])
        == "roles/storage.objectAdmin"
    )
    assert (
        _s(resources["google_bigquery_dataset_iam_member"]["pipeline_dataset"]["role"])
        == "roles/bigquery.dataEditor"
    )
    assert _s(resources["google_artifact_registry_repository_iam_member"]["pipeline_images"]["role"]) == (
        "roles/artifactregistry.reader"
    )
    assert "google_artifact_registry_repository" in resources
    assert "google_composer_environment" in resources
    assert "enable_composer" in _text(resources["google_composer_environment"]["lnq"]["count"])


def test_variables_and_outputs_are_documented() -> None:
    for name in ("variables.tf", "outputs.tf"):
        with (TF / name).open() as f:
            parsed = hcl2.load(f)
        blocks = parsed.get("variable" if name == "variables.tf" else "output", [])
        assert blocks
        for block in blocks:
            for key, body in block.items():
                assert body.get("description"), f"{name}: {key} has no description"


def test_terraform_fmt() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    done = subprocess.run([terraform, "fmt", "-check", "-recursive", str(TF)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

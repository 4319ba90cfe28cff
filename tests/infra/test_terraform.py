"""Terraform, checked offline: it parses, is formatted, and holds the resources and grants promised."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from beam_jobs.bigquery import terraform_schema
from pipeline.outputs.schemas import TABLE_LAYOUT, TABLES

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
    rule = buckets["scratch"]["lifecycle_rule"]
    assert "Delete" in _text(rule)
    # the staging bucket expires only staged packages: templates/ (the DAG's template) is kept
    (condition,) = rule[0]["condition"]
    assert "staging/" in _text(condition["matches_prefix"]) and "templates" not in _text(condition)
    # temporary objects: no soft delete (Beam warns at every launch, and it bills)
    assert buckets["scratch"]["soft_delete_policy"][0]["retention_duration_seconds"] == 0
    assert "NEARLINE" in _text(buckets["results"]["lifecycle_rule"])
    for body in buckets.values():
        assert body["uniform_bucket_level_access"] is True
        assert _s(body["public_access_prevention"]) == "enforced"


def test_dataset_tables_match_the_python_schemas(resources) -> None:
    """Terraform's tables are the declared ones: their schemas and layout are files generated from
    the one declaration (``make schemas``), and Terraform reads them."""
    assert "results" in resources["google_bigquery_dataset"]
    table = resources["google_bigquery_table"]["results"]
    assert "local.tables" in _text(table["for_each"]) and "time_partitioning" in _text(table)
    assert "schemas/layout.json" in _text(_locals()["tables"])
    layout = json.loads((TF / "schemas" / "layout.json").read_text())
    assert layout == TABLE_LAYOUT, "run `make schemas` (infra/terraform/schemas/layout.json)"
    assert set(layout) == set(TABLES)  # measurements too
    for name in TABLES:
        on_disk = json.loads((TF / "schemas" / f"{name}.json").read_text())
        assert on_disk == terraform_schema(name), f"run `make schemas` (infra/terraform/schemas/{name}.json)"
    assert [f["name"] for f in terraform_schema("measurements")][:2] == ["PatientID", "SOPInstanceUID"]


def _locals() -> dict:
    found: dict = {}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as f:
            for block in hcl2.load(f).get("locals", []):
                found.update(block)
    return found


def test_the_template_path_is_declared_once() -> None:
    """Terraform reads the template's object from the one file the Makefile and the DAG read."""
    env = (TF.parent / "dataflow" / "template.env").read_text()
    assert re.search(r"^LNQ_TEMPLATE_OBJECT=templates/\S+\.json$", env, re.M)
    assert "template.env" in _text(_locals()["template_object"])


def test_composer_service_agent_may_act_for_the_composer_account(resources) -> None:
    grant = resources["google_service_account_iam_member"]["composer_service_agent"]
    assert _s(grant["role"]) == "roles/composer.ServiceAgentV2Ext"
    assert "cloudcomposer-accounts.iam.gserviceaccount.com" in _text(grant["member"])
    assert "google_service_account.composer" in _text(grant["service_account_id"])
    assert "composer_service_agent" in _text(resources["google_composer_environment"]["lnq"]["depends_on"])


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

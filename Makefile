# The commands a new user needs: `make demo` (offline: the whole job on phantoms), `make run` (needs
# internet to reach IDC) and `make test` (offline). Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUTPUT ?= results
DEMO_OUTPUT ?= results-demo
LIMIT ?= 3

.PHONY: demo run test test-fast lint venv clean tools viewer-tools view airflow-venv

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test,nnunet]'
	touch $(STAMP)

# Airflow as Cloud Composer runs it (composer-3-airflow-2.10.5), in its own venv: its pins clash with Beam's.
# DuckDB and sqlglot play BigQuery in the DAG's end-to-end test (tests/infra/test_composer_dag_run.py).
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-stamp
$(AIRFLOW_STAMP):
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install -q "apache-airflow==2.10.5" "apache-airflow-providers-google>=14,<17" \
		"apache-airflow-providers-apache-beam>=5,<7" "duckdb>=1.5,<1.6" "sqlglot>=30,<31"
	touch $(AIRFLOW_STAMP)

airflow-venv: $(AIRFLOW_STAMP)

# dicom3tools' dciodvfy validates the DICOM we write; chromium opens the run report (Debian packages).
tools:
	@(command -v dciodvfy >/dev/null && command -v chromium >/dev/null) || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dicom3tools chromium)

# The viewer test (tests/pipeline/dicom/test_viewer.py, marker `viewer`): our SEG and SR in OHIF v3,
# the viewer IDC uses, served by a throwaway Orthanc. Debian's orthanc and orthanc-dicomweb, and
# the prebuilt viewer (the dist/ of npm @ohif/app, pinned) unpacked into the git-ignored .tools/.
OHIF_VERSION ?= 3.13.2
OHIF_DIR := .tools/ohif-app-$(OHIF_VERSION)
$(OHIF_DIR)/dist/index.html:
	rm -rf $(OHIF_DIR) && mkdir -p $(OHIF_DIR)
	cd $(OHIF_DIR) && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null && \
		tar xzf ohif-app-$(OHIF_VERSION).tgz --strip-components=1 && rm ohif-app-$(OHIF_VERSION).tgz
	test -f $@

viewer-tools: tools $(OHIF_DIR)/dist/index.html
	@(test -x /usr/sbin/Orthanc && test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so) || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq orthanc orthanc-dicomweb)

# Look at a run's SEG and SR in OHIF, with the CT they were made from (README "Look at the SEG and SR
# in OHIF"): make view CT=<folder of the CT series> [OUTPUT=results]; Ctrl-C stops it.
view: viewer-tools $(STAMP)
	@test -n "$(CT)" || (echo "make view CT=<folder of the CT series> [OUTPUT=$(OUTPUT)]" >&2; exit 2)
	$(PY) -m tests.support.view $(OUTPUT)/seg $(OUTPUT)/sr $(CT)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lnq demo --output $(DEMO_OUTPUT)

run: $(STAMP)
	$(VENV)/bin/lnq run --limit $(LIMIT) --output $(OUTPUT)/

test: lint tools viewer-tools airflow-venv
	LNQ_AIRFLOW_VENV=$(AIRFLOW_VENV) $(PY) -m pytest

# the edit loop: everything but the slow tests (end-to-end runs, nnU-Net, model limits) and the
# browser test of the viewer (so without Orthanc, OHIF or npm); `make test` stays the one full check
test-fast: lint tools airflow-venv
	LNQ_AIRFLOW_VENV=$(AIRFLOW_VENV) $(PY) -m pytest -m "not slow and not viewer"

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline beam_jobs queries tests bench infra setup.py
	$(VENV)/bin/ruff format --check pipeline beam_jobs queries tests bench infra setup.py
	$(VENV)/bin/mypy pipeline beam_jobs

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) $(OUTPUT) $(DEMO_OUTPUT) *.egg-info .tools

.PHONY: bench bench-accuracy bench-stages bench-score bench-measure bench-isolation bench-dicom bench-report bench-local bench-sharing bench-store bench-demo bench-export bench-gpu
bench-accuracy: $(STAMP)
	$(PY) -m bench.recist_accuracy

bench-stages: $(STAMP)
	$(PY) -m bench.pipeline_stages --sizes 108 556

bench-score: $(STAMP)
	$(PY) -m bench.score_speed

bench-measure: $(STAMP)
	$(PY) -m bench.measure_speed

bench-isolation: $(STAMP)
	$(PY) -m bench.isolation_cost --sizes 108 556

bench-dicom: $(STAMP)
	$(PY) -m bench.dicom_writing

bench-report: $(STAMP)
	$(PY) -m bench.report_speed

bench-local: $(STAMP)
	$(PY) -m bench.local_run

bench-sharing: $(STAMP)
	$(PY) -m bench.model_sharing

bench-store: $(STAMP)
	$(PY) -m bench.store_speed

bench-demo: $(STAMP)
	$(PY) -m bench.demo_speed

bench-export: $(STAMP)
	$(PY) -m bench.export_speed --sizes 108 556

# needs a GPU (not part of `make bench`): utilisation, series per hour, cost per series
bench-gpu: $(STAMP)
	$(PY) -m bench.gpu_throughput --device cuda --price-per-hour $(or $(PRICE_PER_HOUR),1.00)

bench: bench-accuracy bench-stages bench-score bench-measure bench-isolation bench-dicom bench-report bench-local bench-sharing bench-store bench-demo bench-export

# ---- Google Cloud (see README "Run on Google Cloud"); needs gcloud and docker ----
PROJECT ?= $(shell gcloud config get-value project 2>/dev/null)
REGION ?= us-central1
AR_REPO ?= lnq
BUCKET ?= $(PROJECT)-lnq-staging
include infra/dataflow/template.env
TAG ?= $(shell PYTHONPATH=. $(PYTHON) -c "from pipeline.provenance import build_version; print(build_version().replace('+', '-'))")
IMAGE_REPO ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(AR_REPO)/lnq-worker
IMAGE ?= $(IMAGE_REPO):$(TAG)
TEMPLATE ?= gs://$(BUCKET)/$(LNQ_TEMPLATE_OBJECT)

.PHONY: image template schemas
# The worker image carries the Beam SDK of the Beam that launches the job (and this Python): a
# mismatch fails every worker. Tagged with the build version and `latest` (what the DAG runs).
image: $(STAMP)
	docker build -f containers/worker/Dockerfile \
		--build-arg BEAM_VERSION=$$($(PY) -c "import apache_beam; print(apache_beam.__version__)") \
		--build-arg PYTHON_VERSION=$$($(PY) -c "import sys; print('%d.%d' % sys.version_info[:2])") \
		-t $(IMAGE) -t $(IMAGE_REPO):latest .
	docker push $(IMAGE)
	docker push $(IMAGE_REPO):latest

template: image
	gcloud dataflow flex-template build $(TEMPLATE) --image $(IMAGE) --sdk-language PYTHON \
		--metadata-file infra/dataflow/metadata.json --project $(PROJECT)
	@echo "template: $(TEMPLATE) (workers: --parameters sdk_container_image=$(IMAGE))"

# Terraform's BigQuery schemas, from the one declaration of the tables (pipeline/outputs/schemas.py)
schemas: $(STAMP)
	$(PY) -c "from beam_jobs.bigquery import write_terraform_schemas as w; w('infra/terraform/schemas')"

# The two commands a new user needs: `make run` (needs internet to reach IDC) and `make test` (offline).
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUTPUT ?= results
LIMIT ?= 3

.PHONY: run test lint venv clean tools airflow-venv

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test,nnunet]'
	touch $(STAMP)

# Airflow as Cloud Composer runs it (composer-3-airflow-2.10.5), in its own venv: its pins clash with Beam's.
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-stamp
$(AIRFLOW_STAMP):
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install -q "apache-airflow==2.10.5" "apache-airflow-providers-google>=14,<17" \
		"apache-airflow-providers-apache-beam>=5,<7"
	touch $(AIRFLOW_STAMP)

airflow-venv: $(AIRFLOW_STAMP)

# dicom3tools' dciodvfy validates the DICOM we write; chromium opens the run report (Debian packages).
tools:
	@(command -v dciodvfy >/dev/null && command -v chromium >/dev/null) || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dicom3tools chromium)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lnq run --limit $(LIMIT) --output $(OUTPUT)/

test: lint tools airflow-venv
	LNQ_AIRFLOW_VENV=$(AIRFLOW_VENV) $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline beam_jobs queries tests bench infra setup.py
	$(VENV)/bin/ruff format --check pipeline beam_jobs queries tests bench infra setup.py
	$(VENV)/bin/mypy pipeline

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) $(OUTPUT) *.egg-info

.PHONY: bench bench-accuracy bench-stages bench-score bench-measure bench-isolation bench-dicom bench-report bench-local bench-sharing bench-store bench-export bench-gpu
bench-accuracy: $(STAMP)
	$(PY) bench/recist_accuracy.py

bench-stages: $(STAMP)
	$(PY) bench/pipeline_stages.py --sizes 108 556

bench-score: $(STAMP)
	$(PY) bench/score_speed.py

bench-measure: $(STAMP)
	$(PY) bench/measure_speed.py

bench-isolation: $(STAMP)
	$(PY) bench/isolation_cost.py --sizes 108 556

bench-dicom: $(STAMP)
	$(PY) bench/dicom_writing.py

bench-report: $(STAMP)
	$(PY) bench/report_speed.py

bench-local: $(STAMP)
	$(PY) bench/local_run.py

bench-sharing: $(STAMP)
	$(PY) bench/model_sharing.py

bench-store: $(STAMP)
	$(PY) bench/store_speed.py

bench-export: $(STAMP)
	$(PY) bench/export_speed.py --sizes 108 556

# needs a GPU (not part of `make bench`): utilisation, series per hour, cost per series
bench-gpu: $(STAMP)
	$(PY) bench/gpu_throughput.py --device cuda --price-per-hour $(or $(PRICE_PER_HOUR),1.00)

bench: bench-accuracy bench-stages bench-score bench-measure bench-isolation bench-dicom bench-report bench-local bench-sharing bench-store bench-export

# ---- Google Cloud (see README "Run on Google Cloud"); needs gcloud and docker ----
PROJECT ?= $(shell gcloud config get-value project 2>/dev/null)
REGION ?= us-central1
AR_REPO ?= lnq
BUCKET ?= $(PROJECT)-lnq-staging
TAG ?= $(shell $(PYTHON) -c "import re;print(re.search(r'__version__ = \"(.+)\"', open('pipeline/__init__.py').read()).group(1))")
IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(AR_REPO)/lnq-worker:$(TAG)
TEMPLATE ?= gs://$(BUCKET)/templates/lnq-$(TAG).json

.PHONY: image template
image:
	docker build -f containers/worker/Dockerfile -t $(IMAGE) .
	docker push $(IMAGE)

template: image
	gcloud dataflow flex-template build $(TEMPLATE) --image $(IMAGE) --sdk-language PYTHON \
		--metadata-file infra/dataflow/metadata.json --project $(PROJECT)
	@echo "template: $(TEMPLATE)"

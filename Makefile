# The two commands a new user needs: `make run` (needs internet to reach IDC) and `make test` (offline).
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUTPUT ?= results
LIMIT ?= 3

.PHONY: run test lint venv clean tools

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test,nnunet]'
	touch $(STAMP)

# dicom3tools' dciodvfy validates the SEGs we write (Debian package).
tools:
	@command -v dciodvfy >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dicom3tools)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lnq run --limit $(LIMIT) --output $(OUTPUT)/

test: lint tools
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline beam_jobs queries tests bench setup.py
	$(VENV)/bin/ruff format --check pipeline beam_jobs queries tests bench setup.py
	$(VENV)/bin/mypy pipeline

clean:
	rm -rf $(VENV) $(OUTPUT) *.egg-info

.PHONY: bench bench-accuracy bench-stages
bench-accuracy: $(STAMP)
	$(PY) bench/recist_accuracy.py

bench-stages: $(STAMP)
	$(PY) bench/pipeline_stages.py --sizes 108 556

bench: bench-accuracy bench-stages

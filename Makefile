# One target per user action; each calls the documented command (README.md, BUILD.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DEMO_DIR ?= data/demo/kaggle
DEMO_OUT ?= data/demo
TFDS_DIR ?= $(DEMO_OUT)/tfds
MANUAL_DIR ?= $(DEMO_DIR)
EDA_OUT ?= $(DEMO_OUT)/eda
CONFIG ?= full
H5_DIR ?= data/pcam_h5

# DATA_DIR was the Kaggle folder here, but --data_dir is the TFDS folder in every command: refused, not ignored.
ifeq ($(origin DATA_DIR),command line)
$(error DATA_DIR is gone: give the Kaggle-layout folder as MANUAL_DIR (and the TFDS data folder as TFDS_DIR))
endif

TUNER_DIR ?= $(DEMO_OUT)/tune
TUNE_MINUTES ?= 60

.PHONY: help install demo validate stats build build-hdf5 tune evaluate slide test test-fast lint format eda gpu-check clean

# The default target: what each target does (the text after '##').
help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

install: $(STAMP) ## create .venv and install the toolkit with its dev tools

$(STAMP): setup.cfg setup.py constraints.txt pcam_tfds/core/_kernel.c third_party/xxhash/xxhash.h
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

# The whole path on the built-in demo data: generate, validate, take statistics, build, train briefly, submit.
demo: install ## the whole path on generated demo data: validate, statistics, build, train, submit
	$(PY) -m pcam_tfds.synthetic $(DEMO_DIR) --num_train=2000 --num_test=500 --seed=0 --decoy_rate=0
	$(PY) -m beam_jobs.validate --manual_dir=$(DEMO_DIR) --output_dir=$(DEMO_OUT)/validate --strict
	$(PY) -m beam_jobs.stats --manifest=$(DEMO_OUT)/validate/manifest.parquet --output_dir=$(DEMO_OUT)/stats
	PCAM_VALIDATION_DIR=$(DEMO_OUT)/validate $(PY) -m pcam_tfds.build --manual_dir=$(DEMO_DIR) \
		--data_dir=$(TFDS_DIR) --config=full --overwrite
	$(VENV)/bin/pcam-train --model=baseline --data_dir=$(TFDS_DIR) --model_dir=$(DEMO_OUT)/runs/baseline --epochs=8 \
		--batch_size=64 --early_stopping_patience=8 --channel_stats=$(DEMO_OUT)/stats/stats.json --verbose=2
	$(VENV)/bin/pcam-predict --model_dir=$(DEMO_OUT)/runs/baseline --data_dir=$(TFDS_DIR) --tta \
		--output=$(DEMO_OUT)/submission.csv
	@echo
	@echo "validation report: $(DEMO_OUT)/validate/report.md"
	@echo "statistics:        $(DEMO_OUT)/stats/stats.json (the training normalises with them)"
	@echo "dataset:           $(TFDS_DIR)/pcam/full/2.0.0"
	@echo "metrics and plots: $(DEMO_OUT)/runs/baseline (metrics.json, *.png, model.keras)"
	@echo "submission:        $(DEMO_OUT)/submission.csv"

validate: install ## beam_jobs.validate on MANUAL_DIR (a Kaggle-layout folder)
	$(PY) -m beam_jobs.validate --manual_dir=$(MANUAL_DIR) --output_dir=$(DEMO_OUT)/validate

stats: install ## beam_jobs.stats on MANUAL_DIR
	$(PY) -m beam_jobs.stats --manual_dir=$(MANUAL_DIR) --output_dir=$(DEMO_OUT)/stats

# The EDA report (validation + statistics + figures) in one movable folder; then checked in headless Chromium.
eda: install ## the EDA report of MANUAL_DIR, checked in headless Chromium
	$(PY) -m beam_jobs.eda --manual_dir=$(MANUAL_DIR) --output_dir=$(EDA_OUT)
	$(PY) -m beam_jobs.report.browser $(EDA_OUT)/report.html || echo "(Chromium check skipped or failed; open $(EDA_OUT)/report.html)"

# One machine: the local build (see BUILD.md for Beam on a cluster).
build: install ## pcam-build (tfds build, quiet) of MANUAL_DIR into TFDS_DIR (CONFIG=full)
	$(PY) -m pcam_tfds.build --manual_dir=$(MANUAL_DIR) --data_dir=$(TFDS_DIR) --config=$(CONFIG)

# The official PCam HDF5 files (the six camelyonpatch_level_2_split_*.h5, gunzipped): the pcam_hdf5 dataset.
build-hdf5: install ## pcam-build of the PCam HDF5 files in H5_DIR into TFDS_DIR
	$(PY) -m pcam_tfds.build --dataset=pcam_hdf5 --manual_dir=$(H5_DIR) --data_dir=$(TFDS_DIR)

# A Hyperband search over the wide space on a built dataset, bounded by TUNE_MINUTES of wall clock.
tune: install ## a Hyperband search on TFDS_DIR for TUNE_MINUTES
	$(VENV)/bin/pcam-tune --data_dir=$(TFDS_DIR) --tuner_dir=$(TUNER_DIR) --tuner=hyperband --space=wide --epochs=9 \
		--max_minutes=$(TUNE_MINUTES) --verbose=2

test: install ## every test (what .ci/run runs)
	$(VENV)/bin/pytest -q -n 2 --dist=loadfile

test-fast: install ## the tests without Beam and training runs
	$(VENV)/bin/pytest -q -m "not slow"

lint: install ## ruff: lint and formatting
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## ruff format
	$(VENV)/bin/ruff format .

evaluate: install ## a run (RUN=runs/x) on a labelled folder (INPUT_DIR, LABELS) into RUN/external
	$(VENV)/bin/pcam-evaluate --model_dir=$(RUN) --input_dir=$(INPUT_DIR) --labels=$(LABELS) --output_dir=$(RUN)/external --tta

slide: install ## a tumour heatmap of SLIDE by a run (RUN=runs/x) into SLIDE_OUT (default RUN/slides/NAME)
	$(VENV)/bin/pcam-slide --model_dir=$(RUN) --slide=$(SLIDE) --output_dir=$(or $(SLIDE_OUT),$(RUN)/slides/$(basename $(notdir $(SLIDE)))) --tta

gpu-check: install ## images/s, compute dtype and XLA of every model on this machine
	$(VENV)/bin/pcam-gpu-check

clean: ## remove the demo data
	rm -rf data/demo .pytest_cache

# The two commands a fresh machine needs: `make demo` and `make test`. Each builds the environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-data
RUN_DIR ?= reports/demo-run
# pyiqa's PSNR, SSIM and MS-SSIM, the library the `pyiqa` convention's tests run: installed without its ~50
# dependencies (transformers, timm, ...), with only what its metric modules import (huggingface_hub < 1 still
# uses requests). Versions the convention was verified against.
PYIQA_STACK := pyiqa==0.1.16 huggingface_hub==0.36.2 requests==2.34.2 urllib3==2.8.0 certifi==2026.10.19.post1 \
	idna==3.20 charset-normalizer==3.5.3

.PHONY: demo test lint env clean browser

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/python -m pip install --quiet "torch>=2.4" "torchvision>=0.19"
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m pip install --quiet --no-deps $(PYIQA_STACK)
	touch $(STAMP)

demo: env
	$(BIN)/python scripts/make_demo_data.py $(DEMO_DIR)
	$(BIN)/iqa score $(DEMO_DIR)/reference $(DEMO_DIR)/output -o $(RUN_DIR) --overwrite --allow-failures
	@echo "Results: $(RUN_DIR)/scores (Parquet), $(RUN_DIR)/manifest.json, $(RUN_DIR)/report.html"

browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will skip"

test: env browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --doctest-modules pipeline
	$(BIN)/python -m pytest -q -ra

lint: env
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DEMO_DIR) reports/*/

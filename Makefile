# Every target creates .venv when it is missing and installs what it needs (torch==2.13.0 first, so
# that pip takes the CPU build instead of gigabytes of CUDA packages).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= .data
PYTEST_ARGS ?=
# A real Kubernetes control plane for the tests (controller-runtime's envtest convention).
ENVTEST_SOURCE ?= ../shared/envtest
KUBEBUILDER_ASSETS ?= $(CURDIR)/.envtest/bin
export KUBEBUILDER_ASSETS

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[operator,cli,trainer,dev]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the project with every extra

.PHONY: data
data: $(STAMP) ## Build the sample corpus from Debian's Python documentation into .data/
	$(BIN)/python -m eft_devtools.sample_data --out $(DATA_DIR)

.PHONY: envtest
envtest: ## Unpack kube-apiserver, kube-controller-manager and etcd for the tests into .envtest/bin
	@if [ -x "$(KUBEBUILDER_ASSETS)/kube-apiserver" ] && [ -x "$(KUBEBUILDER_ASSETS)/etcd" ]; then \
	  echo "envtest: binaries in $(KUBEBUILDER_ASSETS)"; \
	elif [ -x "$(ENVTEST_SOURCE)/install" ]; then \
	  "$(ENVTEST_SOURCE)/install" "$(KUBEBUILDER_ASSETS)"; \
	elif command -v setup-envtest >/dev/null; then \
	  setup-envtest use -p path --bin-dir .envtest/setup >/dev/null && \
	  mkdir -p "$(KUBEBUILDER_ASSETS)" && cp "$$(setup-envtest use -i -p path --bin-dir .envtest/setup)"/* "$(KUBEBUILDER_ASSETS)/"; \
	else \
	  echo "envtest: no control-plane binaries: set ENVTEST_SOURCE to a folder with an install script, or install setup-envtest"; \
	  if [ "$$CI" = "true" ]; then exit 1; fi; \
	fi

.PHONY: lint
lint: $(STAMP) ## Ruff, mypy, import-linter contracts and hadolint
	$(BIN)/ruff check operator trainer_image tests bench
	$(BIN)/ruff format --check operator trainer_image tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint $(wildcard trainer_image/Dockerfile operator/Dockerfile)

.PHONY: test
test: lint data envtest image-tools ## Lint, then the whole test suite (slow tests and the images included)
	$(BIN)/python -m pytest --durations=25 $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: $(STAMP) envtest ## The tests not marked slow
	$(BIN)/python -m pytest -m "not slow" --durations=25 $(PYTEST_ARGS)

.PHONY: demo
demo: data ## Fine-tune MiniLM on the Python docs corpus via a local S3 server; print base vs fine-tuned
	$(BIN)/python -m eft_devtools.demo --data $(DATA_DIR) --spec examples/quickstart.yaml

.PHONY: bench
bench: data ## Run the benchmarks in bench/ (ratios against a baseline measured in the same run)
	$(BIN)/python bench/run_all.py

# Images (README "Images"): .ci/images/build downloads the wheels each lock file pins into .data/wheels/, then
# builds offline; with docker FROM python:3.11-slim-bookworm, else (buildah/podman) on a Debian bookworm base
# made here with mmdebstrap, for machines without a registry. IMAGES: operator trainer (CUDA) trainer-cpu.
IMAGES ?= operator trainer trainer-cpu
IMAGE_TOOLS := buildah podman runc mmdebstrap

.PHONY: image
image: ## Build the operator and trainer images (docker; else buildah and a local Debian base)
	@if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; } && [ -z "$$ENGINE" ]; then $(MAKE) --no-print-directory image-tools; fi
	.ci/images/build $(IMAGES)

.PHONY: image-tools
image-tools: ## Install buildah, podman, runc and mmdebstrap (Debian packages) for image builds without Docker
	@missing=$$(for t in $(IMAGE_TOOLS); do command -v $$t >/dev/null || echo $$t; done); \
	if [ -z "$$missing" ]; then echo "image-tools: $(IMAGE_TOOLS) are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "image-tools: apt-get install $(IMAGE_TOOLS)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_TOOLS) >/dev/null; \
	else \
	  echo "image-tools: missing $$(echo $$missing): install Debian's packages $(IMAGE_TOOLS) (as root)"; \
	  if [ "$$CI" = "true" ]; then exit 1; fi; \
	fi

.PHONY: image-lock
image-lock: $(STAMP) ## Re-pin every Python package of the images (operator/requirements.lock, trainer_image/requirements-*.lock)
	PYTHON=$(BIN)/python .ci/images/lock

.PHONY: clean
clean: ## Remove the virtual environment, data and caches
	rm -rf $(VENV) $(DATA_DIR) .envtest .pytest_cache .mypy_cache .ruff_cache

.PHONY: schemas
schemas: $(STAMP) ## Regenerate the published JSON Schemas (operator/eft_api/report.schema.json) from the typed models
	$(BIN)/python -m eft_api.report

.PHONY: docs
docs: $(STAMP) ## Regenerate docs/reference/ from the CRD and the typed models, then build the site (strict) into .data/site
	$(BIN)/python -m eft_api.reference docs/reference
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(DATA_DIR)/site

.PHONY: docs-serve
docs-serve: $(STAMP) ## Serve the documentation site on http://127.0.0.1:8000 while you edit it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

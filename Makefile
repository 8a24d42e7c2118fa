# Two commands (see README):  make demo  |  make test
# Both bootstrap the pinned environment from uv.lock first; nothing else needs installing.
# --compile-bytecode: the .pyc files are written once at install, so no process compiles the
# 30k source files of the environment on import (they are never cached where
# PYTHONDONTWRITEBYTECODE is set, as on CI): imports take a third of the CPU time.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.8
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := .venv

.PHONY: install demo test test-fast lint ui mlflow-ui bench clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-extras --compile-bytecode --python $(PYTHON)
	touch $@

install: .venv/.synced

demo: install
	.venv/bin/ml-assets demo

test: install
	bash scripts/system-deps.sh
	.venv/bin/ruff check ml_assets ml_assets_tests bench bentos
	.venv/bin/ruff format --check ml_assets ml_assets_tests bench bentos
	.venv/bin/pytest -n 2 --dist loadgroup -p no:cacheprovider --durations=25

# The fast core: no PostgreSQL, no Chromium, no Bento build or server, nothing slow (README, Tests).
test-fast: install
	.venv/bin/pytest -m "not postgres and not ui and not slow and not serve" -p no:cacheprovider -q

lint: install
	.venv/bin/ruff check --fix ml_assets ml_assets_tests bench bentos
	.venv/bin/ruff format ml_assets ml_assets_tests bench bentos

ui: install
	DAGSTER_HOME=$${DAGSTER_HOME:-$$PWD/.ml_assets/dagster_home} .venv/bin/dagster dev -w workspace.yaml

clean:
	rm -rf .ml_assets

mlflow-ui: install
	.venv/bin/mlflow ui --backend-store-uri sqlite:///$${ML_ASSETS_HOME:-.ml_assets}/mlflow.db --host 127.0.0.1 --port 5000

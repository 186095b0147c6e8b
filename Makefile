# The dashboard's commands. `make run` and `make test` need only python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install run test test-unit test-service test-e2e lint fmt bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv sync --frozen --quiet
	touch $@

run: install  ## start PostgreSQL, NATS, the five services and the gateway
	$(BIN)/python -m shared.launcher

test: install  ## every test: unit, service (real PostgreSQL + NATS), end to end, deploy checks
	$(BIN)/pytest

test-unit: install  ## the quick layer: no servers, seconds
	$(BIN)/pytest tests/unit -q

test-service: install
	$(BIN)/pytest tests/service -q

test-e2e: install
	$(BIN)/pytest tests/e2e -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install  ## benchmarks; writes their tables under bench/results/
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

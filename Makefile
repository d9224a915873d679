# The two commands of the README:
#   make demo   set up and run the main job
#   make test   install and run the tests (what .ci/run calls)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export RECSYS_DATA_DIR ?= $(abspath ../shared/data)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: install test lint demo bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

demo: install
	$(BIN)/recsys train --dataset ml-100k
	$(BIN)/recsys recommend 42 --dataset ml-100k

clean:
	rm -rf $(VENV) artifacts runs reports

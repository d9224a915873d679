# The two commands of the README:
#   make demo   set up and run the whole stack (recsys demo) until Ctrl-C
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

# the whole stack (broker, Redis, model v1, stream worker, trainer, API, replay) until Ctrl-C;
# DEMO_ARGS passes options, e.g. make demo DEMO_ARGS="--api-port 8080 --workers 2"
demo: install
	$(BIN)/recsys demo --dataset ml-100k $(DEMO_ARGS)

clean:
	rm -rf $(VENV) artifacts runs reports

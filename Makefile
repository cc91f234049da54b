# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
IDCSCAN := $(VENV)/bin/idcscan
# What each install holds: base (serving, prediction, slide mode: no torch, no test tools)
# and dev (training, interop and the test tools on top).
BASE_STAMP := $(VENV)/.idcscan-base
DEV_STAMP := $(VENV)/.idcscan-dev

HOST ?= 127.0.0.1
PORT ?= 5000
DEMO_DIR ?= demo
DATA ?=
DEMO_MINUTES ?= 3
# The shared Kaggle subset the shipped model is built from (`make shipped-model`).
KAGGLE ?= ../shared/data/idc-kaggle-subset

.PHONY: install install-dev browser test demo demo-train shipped-model clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(BASE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(BASE_STAMP) $@

install: $(BASE_STAMP)
install-dev: $(DEV_STAMP)

# Debian's Chromium drives the browser tests (Playwright cannot download browsers offline).
# As root with apt-get it is installed here; otherwise the browser tests say how.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: chromium is missing; the browser tests need it (Debian: sudo apt-get install chromium)"; \
	  fi; }

test: $(DEV_STAMP) browser
	$(PY) -m pytest -q

# The shipped model and the real example section, served at once: nothing to train.
demo: $(BASE_STAMP)
	$(IDCSCAN) serve default --examples --host $(HOST) --port $(PORT)

# The synthetic training demo: trains a model on synthetic patches (marked as such everywhere).
demo-train: $(DEV_STAMP)
	$(IDCSCAN) demo --out $(DEMO_DIR) --minutes $(DEMO_MINUTES) $(if $(DATA),--data $(DATA),)
	$(IDCSCAN) serve $(DEMO_DIR)/$(if $(DATA),real,synthetic)/run/bundle --host $(HOST) --port $(PORT)

# Rebuild the shipped model (and its examples) from the Kaggle data with its fixed seed.
shipped-model: $(DEV_STAMP)
	$(IDCSCAN) build-shipped $(KAGGLE) --work shipped-build $(if $(OOF),$(foreach f,$(OOF),--oof $(f)),)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache test-artifacts shipped-build

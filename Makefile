# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
IDCSCAN := $(VENV)/bin/idcscan
STAMP := $(VENV)/.idcscan-installed

DEMO_DIR ?= demo
DATA ?=
DEMO_MINUTES ?= 3
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install test demo demo-bundle clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# The demo bundle is cached: a second `make demo` serves at once.
demo: install
	$(IDCSCAN) demo --out $(DEMO_DIR) --minutes $(DEMO_MINUTES) $(if $(DATA),--data $(DATA),)
	$(IDCSCAN) serve $(DEMO_DIR)/$(if $(DATA),real,synthetic)/run/bundle --host $(HOST) --port $(PORT)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache test-artifacts

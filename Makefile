# One command for the demo, one for the tests. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test lint bench

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,serving,plots]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m maskpre_tf.train --flagfile=configs/demo.flags

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	LD_PRELOAD="$$($(PY) -m maskpre_tf.allocator 2>/dev/null)" $(PY) -m pytest -q -n 2

bench: install
	for b in benchmarks/*_bench.py; do $(PY) $$b || exit 1; done

